"""http.json for real services, against a real aiohttp server on 127.0.0.1 (port 0) that records
what it was sent: retries only when safe, a breaker per host on an injected clock, secrets in
headers, traceparent propagated, bounded and validated answers."""

from __future__ import annotations

import asyncio
import random

import numpy as np
import pytest
from aiohttp import web

from meshserve.clock import ManualClock
from meshserve.errors import FailedPreconditionError, InvalidInputError, UnavailableError
from meshserve.orchestrator.logic import LogicContext, run_logic
from meshserve.orchestrator.logic.breaker import BreakerConfig, CircuitBreaker
from meshserve.orchestrator.logic.http import HttpClient, HttpConfig, close_clients
from tests.stores import span_exporter


@pytest.fixture
async def service():
    state: dict = {"fail": 0, "hits": 0, "headers": [], "slow_s": 0.0}

    async def score(request: web.Request) -> web.Response:
        state["hits"] += 1
        state["headers"].append(dict(request.headers))
        if state["slow_s"]:
            await asyncio.sleep(state["slow_s"])
        if state["fail"] > 0:
            state["fail"] -= 1
            return web.Response(status=503, text="overloaded")
        body = await request.json() if request.can_read_body else {}
        return web.json_response({"risk": [0.5 for _ in body.get("x", [0])]})

    async def huge(request: web.Request) -> web.Response:
        return web.json_response({"risk": [0.1] * 100_000})

    async def wrong(request: web.Request) -> web.Response:
        return web.json_response({"risk": [7.0]})

    app = web.Application()
    app.add_routes([web.route("*", "/score", score), web.post("/huge", huge),
                    web.post("/wrong", wrong)])  # fmt: skip
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}", state
    await runner.cleanup()
    await close_clients()


async def test_post_is_not_retried_unless_opted_in_get_is(service):
    url, state = service
    fast = dict(backoff_base_s=0.001, max_attempts=3)
    state["fail"] = 1
    client = HttpClient(HttpConfig(**fast), rng=random.Random(0))
    with pytest.raises(UnavailableError, match="after 1 attempts"):
        await client.request_json("POST", f"{url}/score", json={"x": [1]})
    assert state["hits"] == 1
    state["fail"] = 1
    assert await client.request_json("GET", f"{url}/score") == {"risk": [0.5]}
    assert state["hits"] == 3
    state["fail"] = 1
    opted = HttpClient(HttpConfig(**fast, retry_non_idempotent=True), rng=random.Random(0))
    assert await opted.request_json("POST", f"{url}/score", json={"x": [1]}) == {"risk": [0.5]}
    await client.close()
    await opted.close()


def test_breaker_state_machine_on_an_injected_clock():
    clock = ManualClock()
    breaker = CircuitBreaker(BreakerConfig(failure_threshold=2, reset_timeout_s=5), clock=clock)
    breaker.record_failure()
    assert breaker.state == "closed" and breaker.allow()
    breaker.record_failure()
    assert breaker.state == "open" and not breaker.allow()
    clock.advance(4.9)
    assert not breaker.allow()
    clock.advance(0.2)
    assert breaker.state == "half_open"
    assert breaker.allow() and not breaker.allow()  # one trial at a time
    breaker.record_failure()
    assert breaker.state == "open"
    clock.advance(5)
    assert breaker.allow()
    breaker.record_success()
    assert breaker.state == "closed" and breaker.allow()
    assert breaker.opened_total == 2


async def test_failing_then_slow_service_opens_the_breaker_which_closes_on_recovery(service):
    url, state = service
    clock = ManualClock()
    config = HttpConfig(
        max_attempts=1, attempt_timeout_s=0.2, breaker=BreakerConfig(3, reset_timeout_s=30)
    )
    client = HttpClient(config, clock=clock)
    state["fail"] = 2
    for _ in range(2):
        with pytest.raises(UnavailableError, match="HTTP 503"):
            await client.request_json("GET", f"{url}/score")
    state["slow_s"] = 1.0  # third failure: a timeout
    with pytest.raises(UnavailableError, match="timed out"):
        await client.request_json("GET", f"{url}/score", deadline=clock() + 10)
    hits = state["hits"]
    with pytest.raises(UnavailableError, match="circuit breaker open") as err:
        await client.request_json("GET", f"{url}/score")
    assert state["hits"] == hits  # refused without calling the service
    assert err.value.retry_pushback_ms == 30_000
    state["slow_s"] = 0.0
    clock.advance(30)
    assert await client.request_json("GET", f"{url}/score") == {"risk": [0.5]}  # the trial
    breaker = client.breakers.for_host(url)
    assert breaker.state == "closed"
    await client.close()


async def test_secret_headers_and_bearer_token_are_sent(service, tmp_path, monkeypatch):
    url, state = service
    monkeypatch.setenv("RISK_API_KEY", "key-123")
    token = tmp_path / "token"
    token.write_text("tok-456\n")
    token.chmod(0o600)
    ctx = LogicContext(
        params={"url": f"{url}/score", "headers": {"X-Client": "meshserve"},
                "secret_headers": {"X-Api-Key": {"env": "RISK_API_KEY"}},
                "bearer_token_file": str(token)},
        step="risk",
    )  # fmt: skip
    await run_logic("http.json", {"x": np.array([1.0])}, ctx)
    sent = state["headers"][-1]
    assert sent["X-Api-Key"] == "key-123" and sent["Authorization"] == "Bearer tok-456"
    assert sent["X-Client"] == "meshserve"
    with pytest.raises(InvalidInputError, match="bearer_token_env"):
        await run_logic(
            "http.json",
            {"x": np.array([1.0])},
            LogicContext(params={"url": f"{url}/score", "bearer_token": "tok"}, step="risk"),
        )


async def test_traceparent_joins_the_called_service_to_the_trace(service):
    url, state = service
    exporter = span_exporter()
    ctx = LogicContext(params={"url": f"{url}/score"}, step="risk", plan="p")
    await run_logic("http.json", {"x": np.array([1.0, 2.0])}, ctx)
    spans = {s.name: s for s in exporter.get_finished_spans()}
    client_span = spans["POST"]
    traceparent = state["headers"][-1]["traceparent"]
    _, trace_id, span_id, _ = traceparent.split("-")
    assert int(trace_id, 16) == client_span.context.trace_id
    assert int(span_id, 16) == client_span.context.span_id  # the service's parent is our span
    assert client_span.parent.span_id == spans["logic http.json"].context.span_id
    attrs = dict(client_span.attributes)
    assert attrs["http.request.method"] == "POST" and attrs["http.response.status_code"] == 200
    assert attrs["server.address"] == "127.0.0.1" and "?" not in attrs["url.full"]


async def test_answers_are_bounded_and_validated(service):
    url, _ = service
    small = LogicContext(params={"url": f"{url}/huge", "max_response_bytes": 10_000}, step="r")
    with pytest.raises(FailedPreconditionError, match="max_response_bytes=10000"):
        await run_logic("http.json", {"x": np.array([1.0])}, small)
    checked = LogicContext(
        params={"url": f"{url}/wrong",
                "response": {"risk": {"kind": "float", "shape": [-1], "min": 0, "max": 1}}},
        step="r",
    )  # fmt: skip
    with pytest.raises(FailedPreconditionError, match="risk"):
        await run_logic("http.json", {"x": np.array([1.0])}, checked)
