"""Closing what the logic building blocks opened on this event loop (orchestrator shutdown)."""

from __future__ import annotations

from meshserve.orchestrator.logic.features import close_stores
from meshserve.orchestrator.logic.http import close_clients
from meshserve.orchestrator.logic.sql import close_pools

__all__ = ["close_logic_connections"]


async def close_logic_connections() -> None:
    """Close PostgreSQL pools, Redis clients and HTTP sessions of the running loop."""
    await close_pools()
    await close_stores()
    await close_clients()
