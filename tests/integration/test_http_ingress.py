"""The orchestrator's HTTP/JSON ingress as a process over real replicas and a real Consul agent.

One module-scoped mesh (scaler, logreg, mlp, forest; every example plan; data-plane tokens on,
as deploy/ runs it): curl answers equal gRPC answers, the OpenAPI document validates and follows
plan changes, the docs page renders in headless Chromium without network, hostile input gets
a fast 4xx, and the auth table holds for every method on both doors.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from meshserve.clients.sdk import MeshServeClient
from meshserve.errors import MeshError
from meshserve.v1 import admin_pb2, orchestrator_pb2
from tests.integration.http_helpers import curl, http_address, metrics_url, raw_exchange, status_of
from tests.integration.orchestrator_helpers import TOKEN, Procs
from tests.integration.trace_checks import MODEL_RPC_PREFIX
from tests.waiting import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
PLANS = REPO / "examples" / "plans"
MODELS = ("scaler", "logreg", "mlp", "forest")
ALL_PLANS_TOKEN = "all-plans-token-0123456789"
PIPELINE_TOKEN = "pipeline-only-token-0123456789"
MAX_BODY = 1 << 20
BODY_TIMEOUT_S = 2.0


def _plan_names() -> list[str]:
    import yaml

    return sorted(yaml.safe_load(p.read_text())["name"] for p in PLANS.glob("*.yaml"))


@pytest.fixture(scope="module")
def mesh_procs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Procs]:
    with Procs(tmp_path_factory.mktemp("http-mesh")) as procs:
        yield procs


@pytest.fixture(scope="module")
def mesh(mesh_procs: Procs, consul_addr: str, models_dir: Path) -> dict[str, str]:
    """gRPC, HTTP and metrics addresses of an orchestrator with data-plane tokens on."""
    for name in MODELS:
        mesh_procs.model(models_dir, name, consul_addr)
    tokens = f"{ALL_PLANS_TOKEN} *\n{PIPELINE_TOKEN} digits-pipeline\n"
    orch = mesh_procs.spawn(
        "orchestrator", "serve", "--consul", consul_addr, "--kv-prefix", mesh_procs.kv_prefix,
        "--metrics-port", "0",
        "--http-max-body-bytes", str(MAX_BODY), "--http-body-timeout-s", str(BODY_TIMEOUT_S),
        env={"MESHSERVE_ADMIN_TOKEN": TOKEN, "MESHSERVE_DATA_TOKENS": tokens},
    )  # fmt: skip
    asyncio.run(_apply_every_plan(orch.address))
    return {
        "grpc": orch.address,
        "http": f"http://{http_address(orch)}",
        "metrics": metrics_url(orch),
    }


async def _apply_every_plan(address: str) -> None:
    """Apply the example plans over Admin, as `meshserve up` does: their typed contracts get
    every output's type from the models (startup plans only have the declared ones)."""
    async with MeshServeClient(address, token=TOKEN) as admin:
        for path in sorted(PLANS.glob("*.yaml")):

            async def applied(text: str = path.read_text()) -> int | None:
                try:
                    return (await admin.apply_plan(text))[1]
                except MeshError as exc:
                    if "unknown model" not in exc.message:
                        raise
                    return None

            await wait_until(applied, 30, f"{path.name}'s models discoverable", 0.2, retry_on=())


@pytest.fixture(scope="module")
def digits(models_dir: Path) -> np.ndarray:
    return np.load(models_dir / "digits_test.npz")["X"][:4].astype(np.float32)


async def _ready(mesh: dict[str, str]) -> None:
    """Every example plan answers over gRPC (its models discovered)."""
    async with MeshServeClient(mesh["grpc"], data_token=ALL_PLANS_TOKEN) as client:
        x = np.zeros((1, 64), np.float32)
        for plan in _plan_names():

            async def answers(plan: str = plan) -> bool:
                await client.execute(plan, {"input": x})
                return True

            await wait_until(answers, 30, f"plan {plan} answering", 0.2)


async def test_curl_json_answers_equal_grpc_for_every_example_plan(mesh, digits):
    await _ready(mesh)
    names = _plan_names()
    assert len(names) == 6, names
    async with MeshServeClient(mesh["grpc"], data_token=ALL_PLANS_TOKEN) as client:
        for plan in names:
            for rows in (digits[:1], digits):  # select routes by row count too
                attributes = {"segment": "a", "tier": "gold" if len(rows) == 1 else "basic"}
                by_decision: dict[str, list[dict[str, np.ndarray]]] = {}
                for i in range(4):
                    key = f"user-{i % 2}"
                    grpc_answer = await client.execute(
                        plan, {"input": rows}, routing_key=key, attributes=attributes
                    )
                    decision = json.dumps(grpc_answer.decisions, sort_keys=True)
                    by_decision.setdefault(decision, []).append(grpc_answer.outputs)
                    status, reply = await curl(
                        f"{mesh['http']}/v1/plans/{plan}:execute",
                        {"input": rows.ravel().tolist(), "routing_key": key,
                         "attributes": attributes, "request_id": f"http-{plan}-{i}"},
                        token=ALL_PLANS_TOKEN,
                    )  # fmt: skip
                    assert status == 200, (plan, reply)
                    assert reply["request_id"] == f"http-{plan}-{i}", reply
                    http_decision = json.dumps(reply.get("decisions", {}), sort_keys=True)
                    outputs = {n: reply[n] for n in grpc_answer.outputs}  # every output is sent
                    by_decision.setdefault(http_decision, [])
                    for expected in by_decision[http_decision]:
                        for name, value in expected.items():
                            got = np.asarray(outputs[name], dtype=value.dtype).reshape(value.shape)
                            assert np.array_equal(got, value), (plan, name)
                    shapes = {n: v.shape for n, v in grpc_answer.outputs.items()}
                    by_decision[http_decision].append(
                        {n: np.asarray(v, dtype=grpc_answer.outputs[n].dtype).reshape(shapes[n])
                         for n, v in outputs.items()}
                    )  # fmt: skip
                compared = [d for d, answers in by_decision.items() if len(answers) > 1]
                assert compared, f"{plan}: no HTTP answer shared a decision with a gRPC one"
    # the versioned form runs the version it names
    status, reply = await curl(
        f"{mesh['http']}/v1/plans/digits-pipeline/versions/1:execute",
        {"input": digits[:1].ravel().tolist()}, token=PIPELINE_TOKEN,
    )  # fmt: skip
    assert status == 200 and reply["plan_version"] == 1, reply
    status, reply = await curl(
        f"{mesh['http']}/v1/plans/digits-pipeline/versions/99:execute",
        {"input": digits[:1].ravel().tolist()}, token=PIPELINE_TOKEN,
    )  # fmt: skip
    assert status == 404 and "no version 99" in reply["error"]["message"], reply


async def test_traceparent_and_request_id_join_the_grpc_trace(mesh, digits):
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    headers = {
        "traceparent": f"00-{trace_id}-00f067aa0ba902b7-01",
        "X-Request-Id": "req-from-the-caller",
    }
    await _ready(mesh)
    status, reply = await curl(
        f"{mesh['http']}/v1/plans/digits-pipeline:execute",
        {"input": digits[:1].ravel().tolist()}, token=PIPELINE_TOKEN, headers=headers,
    )  # fmt: skip
    assert status == 200, reply
    assert reply["trace_id"] == trace_id and reply["request_id"] == "req-from-the-caller", reply
    async with MeshServeClient(mesh["grpc"], token=TOKEN) as admin:

        async def spans() -> list[Any] | None:
            found = list((await admin.get_trace(trace_id)).spans)
            names = {s.name for s in found}
            wanted = {"plan digits-pipeline", "HTTP POST /v1/plans/{plan}:execute"}
            return found if wanted <= names else None

        found = await wait_until(spans, 15, "the HTTP request's spans in the orchestrator", 0.2)
    assert any(s.name.startswith(MODEL_RPC_PREFIX) for s in found), [s.name for s in found]


async def test_openapi_validates_describes_every_plan_and_follows_changes(mesh):
    from openapi_spec_validator import validate

    async with aiohttp.ClientSession() as session:
        async with session.get(f"{mesh['http']}/openapi.json") as response:
            assert response.status == 200
            document = await response.json()
        validate(document)  # an independent OpenAPI 3.1 validator
        schemas = document["components"]["schemas"]

        def schema_of(content: dict[str, Any]) -> dict[str, Any]:
            return schemas[content["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]]

        for plan in _plan_names():
            text = (PLANS / f"{plan.removeprefix('digits-')}.yaml").read_text()
            path = f"/v1/plans/{plan}:execute"
            operation = document["paths"][path]["post"]
            assert f"/v1/plans/{plan}/versions/{{version}}:execute" in document["paths"]
            request = schema_of(operation["requestBody"]["content"])["properties"]
            assert request["input"]["type"] == "array", request
            assert "64 values per row" in request["input"]["description"], request["input"]
            assert {"request_id", "routing_key", "attributes", "timeout_ms"} <= set(request)
            body = operation["requestBody"]["content"]["application/json"]["example"]
            assert len(body["input"]) == 64
            response = schema_of(operation["responses"]["200"]["content"])["properties"]
            outputs = set(response) - {"request_id", "status", "decisions", "plan_version",
                                       "trace_id"}  # fmt: skip
            assert outputs and all(f"{name}:" in text for name in outputs), (plan, outputs)
        # live: a new plan appears, a deleted one goes
        async with MeshServeClient(mesh["grpc"], token=TOKEN) as admin:
            text = (
                (PLANS / "pipeline.yaml")
                .read_text()
                .replace("name: digits-pipeline", "name: http-live-plan")
            )
            await admin.apply_plan(text)
            try:
                async with session.get(f"{mesh['http']}/openapi.json") as response:
                    live = await response.json()
                assert "/v1/plans/http-live-plan:execute" in live["paths"]
                validate(live)
            finally:
                await admin.delete_plan("http-live-plan")
            async with session.get(f"{mesh['http']}/openapi.json") as response:
                gone = await response.json()
            assert "/v1/plans/http-live-plan:execute" not in gone["paths"]


def _chromium() -> str | None:
    return next((p for p in (shutil.which(n) for n in ("chromium", "chromium-browser")) if p), None)


@pytest.mark.skipif(
    _chromium() is None,
    reason="no headless browser: Debian package `chromium` (deploy/bootstrap.sh installs it)",
)
def test_docs_page_renders_offline_in_headless_chromium(mesh, tmp_path):
    """Chromium renders /docs with every host but the orchestrator's unresolvable and no
    proxy: a page that needed a CDN would render without its assets (and the page has no
    reference to any other host)."""
    artifacts = Path(os.environ.get("MESHSERVE_TEST_ARTIFACTS", REPO / ".test-artifacts"))
    artifacts.mkdir(parents=True, exist_ok=True)
    shot = artifacts / "docs-page.png"
    shot.unlink(missing_ok=True)
    url = f"{mesh['http']}/docs"
    offline = [
        "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
        f"--user-data-dir={tmp_path / 'profile'}", "--no-proxy-server",
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
        "--disable-background-networking", "--disable-component-update",
    ]  # fmt: skip
    browser = _chromium()
    assert browser is not None
    dom = subprocess.run(
        [browser, *offline, "--dump-dom", url], capture_output=True, text=True, timeout=120
    )
    assert dom.returncode == 0, dom.stderr[-2000:]
    for plan in _plan_names():
        assert f"/v1/plans/{plan}:execute" in dom.stdout, plan
    assert "<script" not in dom.stdout and "https://" not in dom.stdout
    shot_run = subprocess.run(
        [browser, *offline, f"--screenshot={shot}", "--window-size=1280,2400", url],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert shot_run.returncode == 0 and shot.stat().st_size > 10_000, shot_run.stderr[-2000:]


async def _post_raw(mesh: dict[str, str], body: bytes, content_type: str) -> tuple[int, Any, float]:
    started = time.monotonic()
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{mesh['http']}/v1/plans/digits-pipeline:execute",
            data=body,
            headers={"Content-Type": content_type, "Authorization": f"Bearer {PIPELINE_TOKEN}"},
        ) as response,
    ):
        text = await response.text()
        return response.status, json.loads(text), time.monotonic() - started


async def test_hostile_input_gets_a_fast_4xx_and_the_server_stays_up(mesh, digits):
    await _ready(mesh)
    good = json.dumps({"input": digits[:1].ravel().tolist()}).encode()
    bad_timeout = json.dumps({"input": digits[:1].ravel().tolist(), "timeout_ms": -1}).encode()
    cases: list[tuple[str, bytes, str, int, str]] = [
        ("malformed", b'{"inputs": {"input": [[1, 2', "application/json", 400, "not JSON"),
        ("not utf-8", b'{"inputs": "\xff\xfe"}', "application/json", 400, "UTF-8"),
        ("wrong type", b'{"input": "zero"}', "application/json", 400, "input"),
        ("wrong rows", b'{"input": [1, 2]}', "application/json", 400, "64 values per row"),
        ("nested rows", b'{"input": [[1], [1, 2]]}', "application/json", 400, "input"),
        ("unknown field", b'{"inputs": {}}', "application/json", 400, "no field named"),
        ("string", b'{"input": ["a"]}', "application/json", 400, "input"),
        ("not an object", b"[1, 2, 3]", "application/json", 400, "a JSON object"),
        ("bad timeout", bad_timeout, "application/json", 400, "timeout_ms"),
        ("deep nesting", b"[" * 200_000 + b"]" * 200_000, "application/json", 400, "depth"),
        ("deep but small", b'{"input": ' + b"[" * 5000 + b"]" * 5000 + b"}",
         "application/json", 400, "max_json_depth"),
        ("huge body", b" " * (MAX_BODY + 1), "application/json", 413, "max_body_bytes"),
        ("wrong content type", good, "text/plain", 415, "application/json"),
        ("form", b"inputs=1", "application/x-www-form-urlencoded", 415, "application/json"),
    ]  # fmt: skip
    for what, body, content_type, status, words in cases:
        got, reply, took = await _post_raw(mesh, body, content_type)
        assert got == status, (what, got, reply)
        assert words in json.dumps(reply), (what, reply)
        assert reply["error"]["code"] == status and took < 5, (what, took)
    # A field error names the field and what was expected.
    got, reply, _ = await _post_raw(mesh, b'{"input": [1, 2, 3]}', "application/json")
    assert reply["error"]["field"] == "input" and "float32" in reply["error"]["expected"], reply
    # Slowloris: a body trickling in is cut off after body_timeout_s with 408, and other
    # requests are served meanwhile.
    address = mesh["http"].removeprefix("http://")
    head = (
        "POST /v1/plans/digits-pipeline:execute HTTP/1.1\r\nHost: x\r\n"
        f"Authorization: Bearer {PIPELINE_TOKEN}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(good)}\r\n\r\n"
    ).encode()
    slow = asyncio.create_task(
        asyncio.to_thread(raw_exchange, address, [head, *[good[i : i + 1] for i in range(40)]], 0.5)
    )
    for _ in range(3):
        got, reply, took = await _post_raw(mesh, good, "application/json")
        assert got == 200 and took < 5, (got, reply, took)
    reply_bytes, took = await slow
    assert status_of(reply_bytes) == 408, reply_bytes[:300]
    assert BODY_TIMEOUT_S <= took < BODY_TIMEOUT_S + 10, took
    # A header line over the limit, garbage instead of HTTP: 400 from the server itself.
    long_header = head.replace(b"Host: x", b"Host: " + b"x" * 20_000)
    reply_bytes, _ = await asyncio.to_thread(raw_exchange, address, [long_header])
    assert 400 <= status_of(reply_bytes) < 500, reply_bytes[:200]
    reply_bytes, _ = await asyncio.to_thread(
        raw_exchange, address, [b"\x16\x03\x01garbage\r\n\r\n"]
    )
    assert 400 <= status_of(reply_bytes) < 500 or reply_bytes == b"", reply_bytes[:200]
    # Unknown route and method: JSON errors too.
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{mesh['http']}/v1/nothing-here") as response:
            assert response.status == 404 and (await response.json())["error"]["code"] == 404
        async with session.get(f"{mesh['http']}/v1/plans/digits-pipeline:execute") as response:
            assert response.status == 405
        async with session.get(f"{mesh['http']}/healthz") as response:
            assert response.status == 200
    got, reply, _ = await _post_raw(mesh, good, "application/json")
    assert got == 200 and reply["label"], reply


# -- the auth table ---------------------------------------------------------------------------

NO_TOKEN = ""
WRONG = "wrong-token-000000000000000"
OTHER_PLAN = PIPELINE_TOKEN  # scoped to digits-pipeline; the table runs digits-ensemble


def _scrape(mesh: dict[str, str]) -> str:
    import urllib.request

    with urllib.request.urlopen(mesh["metrics"], timeout=10) as response:
        return str(response.read().decode())


def _refused(mesh: dict[str, str]) -> dict[tuple[str, str, str], float]:
    text = _scrape(mesh)
    out: dict[tuple[str, str, str], float] = {}
    for family in text_string_to_metric_families(text):
        if family.name == "meshserve_auth_refused":
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    labels = sample.labels
                    out[(labels["surface"], labels["service"], labels["code"])] = sample.value
    return out


def _metadata(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),) if token else ()


async def _grpc_code(call: Any) -> grpc.StatusCode:
    try:
        await call
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


async def test_auth_table_every_method_grpc_and_http(mesh, digits):
    await _ready(mesh)
    plan = "digits-ensemble"
    x = {"input": digits[:1]}
    from meshserve.tensors import from_numpy_map

    execute = orchestrator_pb2.ExecuteRequest(plan=plan, inputs=from_numpy_map(x))
    before = _refused(mesh)
    expected = {NO_TOKEN: "UNAUTHENTICATED", WRONG: "UNAUTHENTICATED",
                OTHER_PLAN: "PERMISSION_DENIED", ALL_PLANS_TOKEN: "OK"}  # fmt: skip
    async with grpc.aio.insecure_channel(mesh["grpc"]) as channel:
        from meshserve.v1 import orchestrator_pb2_grpc

        stub = orchestrator_pb2_grpc.OrchestratorStub(channel)
        for token, want in expected.items():
            md = _metadata(token)
            got = await _grpc_code(stub.Execute(execute, metadata=md, timeout=20))
            assert got.name == want, ("Execute", token, got)

            async def one_item(md: tuple[tuple[str, str], ...] = md) -> Any:
                item = orchestrator_pb2.ExecuteRequest(id="s1", plan=plan, inputs=execute.inputs)
                call = stub.ExecuteStream(iter([item]), metadata=md, timeout=20)
                replies = [r async for r in call]
                assert replies[0].status.code == 0, replies[0].status
                return replies

            got = await _grpc_code(one_item())
            assert got.name == want, ("ExecuteStream", token, got)
            # Feedback needs a valid token (any scope); with one it reaches the learning hub
            feedback = orchestrator_pb2.FeedbackRequest(request_id="nope", reward=1.0)
            got = await _grpc_code(stub.Feedback(feedback, metadata=md, timeout=20))
            want_feedback = want if want == "UNAUTHENTICATED" else "NOT_FOUND"
            assert got.name == want_feedback, ("Feedback", token, got)
        # Admin: only the admin token; a data-plane token is not one
        service = admin_pb2.DESCRIPTOR.services_by_name["Admin"]
        for method in service.methods:
            call = channel.unary_unary(
                f"/{service.full_name}/{method.name}",
                request_serializer=lambda m: m.SerializeToString(),
                response_deserializer=lambda b: b,
            )
            request = method.input_type._concrete_class()
            for token in (NO_TOKEN, WRONG, ALL_PLANS_TOKEN, PIPELINE_TOKEN):
                got = await _grpc_code(call(request, metadata=_metadata(token), timeout=10))
                assert got == grpc.StatusCode.UNAUTHENTICATED, (method.name, token, got)
            got = await _grpc_code(call(request, metadata=_metadata(TOKEN), timeout=10))
            assert got != grpc.StatusCode.UNAUTHENTICATED, method.name
        # health and reflection stay public (probes, grpcurl)
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        health = health_pb2_grpc.HealthStub(channel)
        assert (await health.Check(health_pb2.HealthCheckRequest())).status == 1
    http_status = {"UNAUTHENTICATED": 401, "PERMISSION_DENIED": 403, "OK": 200}
    for token, want in expected.items():
        for path in (f"/v1/plans/{plan}:execute", f"/v1/plans/{plan}/versions/1:execute"):
            status, reply = await curl(
                f"{mesh['http']}{path}", {"input": digits[:1].ravel().tolist()}, token=token
            )
            assert status == http_status[want], (path, token, reply)
            if status != 200:
                assert reply["error"]["status"] == want and "token" in reply["error"]["message"]
                assert token not in json.dumps(reply) or not token
        status, reply = await curl(
            f"{mesh['http']}/v1/feedback", {"request_id": "nope", "reward": 1.0}, token=token
        )
        assert status == (401 if want == "UNAUTHENTICATED" else 404), (token, reply)
    async with aiohttp.ClientSession() as session:
        for path in ("/healthz", "/readyz", "/openapi.json", "/docs"):
            async with session.get(f"{mesh['http']}{path}") as response:
                assert response.status == 200, path
    after = _refused(mesh)

    def added(key: tuple[str, str, str]) -> float:
        return after.get(key, 0.0) - before.get(key, 0.0)

    # gRPC: 3 data-plane methods x 2 unauthenticated, 2 scoped (Execute, ExecuteStream)
    assert added(("grpc", "data", "UNAUTHENTICATED")) == 6, after
    assert added(("grpc", "data", "PERMISSION_DENIED")) == 2, after
    assert added(("grpc", "admin", "UNAUTHENTICATED")) == 4 * len(service.methods), after
    assert added(("http", "data", "UNAUTHENTICATED")) == 6, after
    assert added(("http", "data", "PERMISSION_DENIED")) == 2, after
    metrics_text = _scrape(mesh)
    for token in (ALL_PLANS_TOKEN, PIPELINE_TOKEN, TOKEN):
        assert token not in metrics_text


def test_cli_call_over_http_equals_grpc(mesh, digits, tmp_path):
    """``meshserve call --http`` (the data token from the environment, never argv)."""
    np.save(tmp_path / "x.npy", digits)
    env = {
        **os.environ,
        "MESHSERVE_DATA_TOKEN": ALL_PLANS_TOKEN,
        "MESHSERVE_ORCHESTRATOR": mesh["grpc"],
    }
    outs = []
    for extra in (["--http", "--http-url", mesh["http"]], []):
        proc = subprocess.run(
            [sys.executable, "-m", "meshserve.clients.cli", "call", "digits-pipeline",
             "--input", f"input={tmp_path / 'x.npy'}", "--output-dir", str(tmp_path), *extra],
            capture_output=True, text=True, timeout=60, env=env,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        outs.append(np.load(tmp_path / "label.npy"))
    assert np.array_equal(outs[0], outs[1]) and len(outs[0]) == len(digits)
    proc = subprocess.run(
        [sys.executable, "-m", "meshserve.clients.cli", "call", "digits-pipeline", "--input",
         f"input={tmp_path / 'x.npy'}", "--http", "--http-url", mesh["http"]],
        capture_output=True, text=True, timeout=60, env={**env, "MESHSERVE_DATA_TOKEN": WRONG},
    )  # fmt: skip
    assert proc.returncode == 1 and "UNAUTHENTICATED" in proc.stderr, proc.stderr
