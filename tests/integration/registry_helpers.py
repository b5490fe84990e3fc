"""Fixtures shared by the registry integration tests."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest


@pytest.fixture(autouse=True)
async def no_leaked_registry_tasks() -> AsyncIterator[None]:
    """Teardown check: every watcher, registration and election stopped its tasks."""
    yield
    prefixes = ("watch-", "register-", "leader-")
    leaked = [t.get_name() for t in asyncio.all_tasks() if t.get_name().startswith(prefixes)]
    assert not leaked, f"registry tasks still running: {leaked}"
