"""meshserve.modelsvc."""
