"""Fuzz: hostile JSON and raw bodies at the HTTP doors of real processes (the orchestrator's
plan ingress and feedback, a replica's KServe V2 REST infer).

A pass: every answer is a 2xx or 4xx JSON error (never 5xx: nothing hostile reaches INTERNAL),
each within the deadline, and a good request is answered afterwards. Size: MESSAGES / 20 / BATCH
examples (fuzz_strategies.MESSAGES, ``MESHSERVE_FUZZ_EXAMPLES``), each `BATCH` JSON bodies and
4 raw ones at the plan door and V2 REST, 8 at feedback, concurrently. The plan is loaded at
startup (`--plans`): its declared output_specs type the HTTP reply.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.integration import fuzz_strategies as fz
from tests.integration.http_helpers import http_address
from tests.integration.orchestrator_helpers import Procs

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.fuzz]

PLANS = Path(__file__).resolve().parents[2] / "examples" / "plans"
SETTINGS = settings(
    max_examples=max(1, fz.MESSAGES // (20 * fz.BATCH)),
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False), st.text(max_size=20),
)  # fmt: skip
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=8), st.dictionaries(st.text(max_size=12), inner, max_size=6)
    ),
    max_leaves=60,
)
row = st.lists(st.one_of(st.floats(width=32, allow_nan=False), st.integers(-5, 5)), max_size=70)


@st.composite
def execute_bodies(draw: st.DrawFn) -> Any:
    """Mostly near-valid bodies (so the checks past parsing are reached), some anything."""
    if draw(st.integers(0, 4)) == 0:
        return draw(json_values)
    name = draw(st.sampled_from(["input", "x", "", "request_id"]))
    body: dict[str, Any] = {name: draw(st.one_of(row, st.lists(row, max_size=3), json_values))}
    for key, values in (
        ("routing_key", st.one_of(st.text(max_size=300), json_values)),
        (
            "attributes",
            st.one_of(st.dictionaries(st.text(max_size=8), st.text(max_size=8)), json_values),
        ),
        ("timeout_ms", st.one_of(st.integers(-10, 5_000_000), json_values)),
        ("id", st.one_of(st.text(max_size=200), json_values)),
    ):
        if draw(st.booleans()):
            body[key] = draw(values)
    return body


@st.composite
def v2_bodies(draw: st.DrawFn) -> Any:
    if draw(st.integers(0, 4)) == 0:
        return draw(json_values)
    tensor: dict[str, Any] = {
        "name": draw(st.sampled_from(["input", "x", 5])),
        "datatype": draw(st.sampled_from(["FP32", "INT64", "BOOL", "BYTES", "FP16", "nope"])),
        "shape": draw(st.one_of(st.lists(st.integers(-2, 70), max_size=4), json_values)),
        "data": draw(st.one_of(st.lists(row, max_size=3), row, json_values)),
    }
    if draw(st.booleans()):
        tensor["parameters"] = {"binary_data_size": draw(st.integers(-1, 300))}
    return {"inputs": [tensor], "outputs": draw(st.one_of(st.just([]), json_values))}


bodies_or_bytes = st.one_of(st.binary(max_size=300), st.text(max_size=300).map(str.encode))


@pytest.fixture(scope="module")
def doors(
    tmp_path_factory: pytest.TempPathFactory, consul_addr: str, models_dir: Path
) -> Iterator[dict[str, str]]:
    with Procs(tmp_path_factory.mktemp("http-fuzz")) as procs:
        replicas = [procs.model(models_dir, name, consul_addr) for name in ("scaler", "mlp")]
        orch = procs.orchestrator(consul_addr, "--plans", str(PLANS / "pipeline.yaml"))
        yield {
            "execute": f"http://{http_address(orch)}/v1/plans/digits-pipeline:execute",
            "feedback": f"http://{http_address(orch)}/v1/feedback",
            "v2": f"http://{http_address(replicas[1])}/v2/models/mlp/infer",
        }


async def _send(url: str, bodies: list[bytes], content_type: str = "application/json") -> None:
    timeout = aiohttp.ClientTimeout(total=fz.DEADLINE_S)
    async with aiohttp.ClientSession(timeout=timeout) as session:

        async def one(body: bytes) -> None:
            async with session.post(url, data=body, headers={"Content-Type": content_type}) as r:
                text = await r.text()
                assert r.status < 500, (url, body[:200], r.status, text[:300])
                if r.status >= 400:
                    assert "error" in json.loads(text), text[:300]

        await asyncio.gather(*(one(b) for b in bodies))


def _good(doors: dict[str, str]) -> None:
    x = np.zeros((1, 64)).tolist()

    async def go() -> None:
        async with aiohttp.ClientSession() as session:
            async with session.post(doors["execute"], json={"input": x[0]}) as r:
                assert r.status == 200, await r.text()
            v2 = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 64], "data": x}]}
            async with session.post(doors["v2"], json=v2) as r:
                assert r.status == 200, await r.text()

    asyncio.run(go())


@pytest.mark.timeout(900)
def test_fuzzed_bodies_get_4xx_never_5xx(doors):
    _good(doors)  # the models are discovered before the fuzzing starts

    @SETTINGS
    @given(
        st.lists(execute_bodies(), min_size=fz.BATCH, max_size=fz.BATCH),
        st.lists(v2_bodies(), min_size=fz.BATCH, max_size=fz.BATCH),
        st.lists(bodies_or_bytes, min_size=4, max_size=4),
    )
    def run(execute: list[Any], v2: list[Any], raw: list[bytes]) -> None:
        dump = [json.dumps(b).encode() for b in execute]
        asyncio.run(_send(doors["execute"], dump + raw))
        asyncio.run(_send(doors["feedback"], dump[:4] + raw))
        asyncio.run(_send(doors["v2"], [json.dumps(b).encode() for b in v2] + raw))

    run()
    _good(doors)
