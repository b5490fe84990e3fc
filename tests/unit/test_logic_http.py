"""External HTTP calls against a real aiohttp server on 127.0.0.1, port 0."""

from __future__ import annotations

import asyncio
import random
import time

import numpy as np
import pytest
from aiohttp import web

from meshserve.errors import DeadlineExceededError, InvalidInputError, UnavailableError
from meshserve.orchestrator.logic import LogicContext, run_logic
from meshserve.orchestrator.logic.http import HttpClient, HttpConfig, close_clients


@pytest.fixture
async def server():
    state = {"flaky_left": 2, "hits": 0}

    async def flaky(request: web.Request) -> web.Response:
        state["hits"] += 1
        if state["flaky_left"] > 0:
            state["flaky_left"] -= 1
            return web.Response(status=503, text="busy")
        body = await request.json()
        return web.json_response({"sum": [sum(body["x"])]})

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(1)
        return web.json_response({})

    async def bad(request: web.Request) -> web.Response:
        return web.Response(status=400, text="field x must be positive\nmore")

    async def down(request: web.Request) -> web.Response:
        return web.Response(status=503, text="down")

    app = web.Application()
    app.add_routes(
        [web.post("/flaky", flaky), web.post("/slow", slow), web.post("/bad", bad),
         web.post("/down", down)]
    )  # fmt: skip
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield f"http://127.0.0.1:{port}", state
    await runner.cleanup()


async def test_retries_on_503_then_succeeds(server):
    url, state = server
    config = HttpConfig(max_attempts=3, backoff_base_s=0.01, retry_non_idempotent=True)
    client = HttpClient(config, rng=random.Random(1))
    assert await client.request_json("POST", f"{url}/flaky", json={"x": [1, 2]}) == {"sum": [3]}
    assert state["hits"] == 3 and client.attempts_total == 3
    await client.close()


async def test_gives_up_after_max_attempts(server):
    url, _ = server
    client = HttpClient(HttpConfig(max_attempts=2, backoff_base_s=0.01, retry_non_idempotent=True))
    with pytest.raises(UnavailableError, match="failed after 2 attempts: HTTP 503 down"):
        await client.request_json("POST", f"{url}/down", json={})
    await client.close()


async def test_timeout_is_deadline_exceeded(server):
    url, _ = server
    client = HttpClient(HttpConfig(timeout_s=0.2, max_attempts=3))
    start = time.monotonic()
    with pytest.raises(DeadlineExceededError, match=r"did not answer within 0\.2s"):
        await client.request_json("POST", f"{url}/slow", json={})
    assert time.monotonic() - start < 1.0
    await client.close()


async def test_client_error_is_not_retried(server):
    url, _ = server
    client = HttpClient(HttpConfig(max_attempts=3))
    with pytest.raises(InvalidInputError, match="answered HTTP 400 field x must be positive"):
        await client.request_json("POST", f"{url}/bad", json={})
    assert client.attempts_total == 1
    await client.close()


async def test_unreachable_is_unavailable():
    client = HttpClient(HttpConfig(max_attempts=2, backoff_base_s=0.01))
    with pytest.raises(UnavailableError, match="ClientConnectorError"):
        await client.request_json("GET", "http://127.0.0.1:1/none")
    await client.close()


async def test_http_json_logic_step(server):
    url, state = server
    state["flaky_left"] = 0
    ctx = LogicContext(params={"url": f"{url}/flaky"}, step="ext")
    out = await run_logic("http.json", {"x": np.array([1.5, 2.5])}, ctx)
    np.testing.assert_array_equal(out["sum"], [4.0])
    await close_clients()
