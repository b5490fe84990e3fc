"""``--plans`` seeds the store and never overrides: a restart keeps what an operator applied
through Admin since, an edited file still rolls out, an unchanged one is never re-applied."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from meshserve.clients.sdk import MeshServeClient
from meshserve.v1 import plan_pb2
from tests.integration.orchestrator_helpers import PYTHON_MODULES, TOKEN, Procs

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PLAN = "name: seeded\npython: examples.programmatic:pipeline\ndescription: {text}\n"


def _write(path: Path, text: str, mtime_s: float) -> None:
    path.write_text(PLAN.format(text=text))
    os.utime(path, (mtime_s, mtime_s))


async def _state(address: str) -> tuple[int, list[int], str]:
    async with MeshServeClient(address, token=TOKEN) as client:
        summary = {p.name: p for p in await client.list_plans()}["seeded"]
        active = await client.get_plan("seeded")
        return summary.active_version, list(summary.versions), active.description


async def _operator_applies(address: str) -> None:
    async with MeshServeClient(address, token=TOKEN) as client:
        plan = plan_pb2.Plan(name="seeded", python="examples.programmatic:pipeline")
        plan.description = "operator"
        await client.apply_plan(plan)


async def test_restart_seeds_and_never_overrides(consul_addr: str, tmp_path: Path) -> None:
    plans = tmp_path / "plans"
    plans.mkdir()
    file = plans / "seeded.yaml"
    _write(file, "file v1", time.time() - 3600)  # written an hour ago
    with Procs(tmp_path) as procs:
        args = ("--no-learning", "--metrics-port", "-1", "--plans", str(plans), *PYTHON_MODULES)
        first = procs.orchestrator(consul_addr, *args)
        assert await _state(first.address) == (1, [1], "file v1")
        await _operator_applies(first.address)
        assert first.stop() == 0

        second = procs.orchestrator(consul_addr, *args)  # the file is older than v2
        assert await _state(second.address) == (2, [1, 2], "operator")
        assert second.stop() == 0

        _write(file, "file v2", time.time() + 5)  # edited after the operator's version
        third = procs.orchestrator(consul_addr, *args)
        assert await _state(third.address) == (3, [1, 2, 3], "file v2")
        assert third.stop() == 0

        fourth = procs.orchestrator(consul_addr, *args)  # unchanged: already version 3
        assert await _state(fourth.address) == (3, [1, 2, 3], "file v2")
        log = fourth.log_path.read_text()
        assert "startup plan seeded: kept: the content is already version 3" in log
