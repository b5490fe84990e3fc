"""meshserve.orchestrator."""
