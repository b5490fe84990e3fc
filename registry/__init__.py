"""meshserve.registry."""
