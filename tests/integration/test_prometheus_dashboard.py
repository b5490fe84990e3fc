"""The Grafana dashboard against a real Prometheus over a real mesh with traffic.

A real Consul agent, model replicas (scaler, mlp version 1 twice, mlp version 2, logreg) and an
orchestrator serving a pipeline with a validation step, a shadow step comparing mlp version 2
with version 1, and a bandit step that gets feedback. A fault on one mlp replica makes the
data path retry. A real Prometheus (Debian's ``prometheus``) scrapes every process it finds
through Consul with the relabelling of deploy/prometheus/prometheus.yml and evaluates
deploy/prometheus/rules.yml. While traffic runs, every PromQL query of every dashboard panel is
evaluated through Prometheus' HTTP API until each returns data.
"""

from __future__ import annotations

import asyncio
import json
import random
from pathlib import Path

import numpy as np
import pytest

from meshserve.clients.sdk import MeshServeClient
from meshserve.errors import MeshError
from meshserve.telemetry import catalog
from tests.integration.datapath_helpers import unique_name
from tests.integration.prometheus_helpers import (
    PROMETHEUS,
    ConsulHttpSd,
    PrometheusServer,
    deployed_health_filter,
    prometheus_config,
    scrape_and_validate,
)
from tests.waiting import wait_until

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.timeout(600),  # generous on a loaded machine; ~25 s when idle
    pytest.mark.skipif(
        PROMETHEUS is None,
        reason="prometheus binary not installed (Debian package `prometheus`, deploy/bootstrap.sh)",
    ),
]

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "meshserve.json"
TOKEN = "prom-test-token"
SCRAPE_INTERVAL_S = 1.0
RATE_WINDOW = "10s"  # Grafana's $__rate_interval for a 1 s scrape interval (>= 4 scrapes)
WORKERS = 6


def _plans(names: dict[str, str]) -> str:
    scaler, mlp, logreg = names["scaler"], names["mlp"], names["logreg"]
    return f"""
name: {names["pipeline"]}
inputs:
  - {{name: input, dtype: float32, shape: [-1, 64]}}
steps:
  - name: check
    logic:
      function: validate
      params: {{fields: {{input: {{kind: float, min: 0, max: 16}}}}}}
    inputs: {{input: input.input}}
  - name: scale
    model: {scaler}
    inputs: {{input: check.input}}
  - name: classify
    model: {{model: {mlp}, version: "1"}}
    inputs: {{input: scale.scaled}}
outputs:
  label: classify.label
---
name: {names["shadow"]}
inputs:
  - {{name: input, dtype: float32, shape: [-1, 64]}}
steps:
  - name: scale
    model: {scaler}
    inputs: {{input: input.input}}
  - name: compare
    inputs: {{input: scale.scaled}}
    shadow:
      primary: {{model: {{model: {mlp}, version: "1"}}}}
      candidate: {{model: {{model: {mlp}, version: "2"}}}}
      compare_output: label
outputs:
  label: compare.label
---
name: {names["bandit"]}
inputs:
  - {{name: input, dtype: float32, shape: [-1, 64]}}
steps:
  - name: scale
    model: {scaler}
    inputs: {{input: input.input}}
  - name: choose
    inputs: {{input: scale.scaled}}
    bandit:
      policy: thompson
      seed: 3
      arms:
        - {{name: mlp, model: {{model: {mlp}, version: "1"}}}}
        - {{name: logreg, model: {logreg}}}
outputs:
  label: choose.label
"""


def _panel_queries() -> list[tuple[str, str]]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [
        (p["title"], t["expr"].replace("$__rate_interval", RATE_WINDOW))
        for p in dashboard["panels"]
        for t in p.get("targets", ())
    ]


async def _traffic(client: MeshServeClient, names: dict[str, str], stop: asyncio.Event) -> int:
    """Requests from WORKERS concurrent callers until `stop`: mostly good rows, one in ten out
    of the validated range; every bandit answer gets a reward. Returns requests sent."""
    rng = np.random.default_rng(11)
    sent = 0

    async def worker(seed: int) -> None:
        nonlocal sent
        pick = random.Random(seed)
        while not stop.is_set():
            rows = (rng.random((pick.randint(1, 3), 64)) * 16).astype(np.float32)
            plan = pick.choice((names["pipeline"], names["shadow"], names["bandit"]))
            if plan == names["pipeline"] and pick.random() < 0.1:
                rows[0, 0] = 99.0  # the validation step refuses it: a plan and step error
            request_id = unique_name("req")
            sent += 1
            try:
                await client.execute(plan, {"input": rows}, request_id=request_id, timeout_s=10)
            except MeshError:
                continue
            if plan == names["bandit"]:
                await client.feedback(request_id, reward=pick.random())

    await asyncio.gather(*(worker(i) for i in range(WORKERS)))
    return sent


def test_every_dashboard_panel_returns_data_on_a_real_prometheus(
    spawn, consul_addr: str, models_dir: Path, tmp_path: Path
):
    names = {k: unique_name(f"pd-{k}") for k in ("scaler", "mlp", "logreg")}
    names.update({k: unique_name(f"pd-{k}") for k in ("pipeline", "shadow", "bandit")})
    common = ["--consul", consul_addr, "--port", "0", "--metrics-port", "0", "--threads", "1"]

    def model(file: str, name: str, version: str = "1") -> str:
        proc = spawn("model", "serve", str(models_dir / f"{file}.onnx"), "--name", name,
                     "--version", version, *common)  # fmt: skip
        return proc.address

    model("scaler", names["scaler"])
    model("mlp", names["mlp"])
    model("mlp", names["mlp"])
    model("mlp", names["mlp"], version="2")
    model("logreg", names["logreg"])
    plans = tmp_path / "plans"
    plans.mkdir()
    for i, text in enumerate(_plans(names).split("---\n")):
        (plans / f"plan-{i}.yaml").write_text(text)
    orch_id = unique_name("pd-orch")
    orch = spawn(
        "orchestrator", "serve", "--port", "0", "--consul", consul_addr, "--metrics-port", "0",
        "--plans", str(plans), "--instance-id", orch_id, env={"MESHSERVE_ADMIN_TOKEN": TOKEN},
    )  # fmt: skip

    sd: ConsulHttpSd | None = None
    server: PrometheusServer | None = None
    try:
        sd = ConsulHttpSd(consul_addr, deployed_health_filter())
        server = PrometheusServer(prometheus_config(sd.url, SCRAPE_INTERVAL_S), tmp_path / "prom")
        asyncio.run(_run(server, orch.address, orch_id, names))
    except BaseException:
        if server is not None:
            print(server.tail())
        raise
    finally:
        if server is not None:
            server.stop()
        if sd is not None:
            sd.close()


async def _run(
    server: PrometheusServer, orch_address: str, orch_id: str, names: dict[str, str]
) -> None:
    async with MeshServeClient(orch_address, token=TOKEN) as client:
        warm = np.full((1, 64), 3.0, np.float32)

        async def plans_answer() -> bool:
            for plan in (names["pipeline"], names["shadow"], names["bandit"]):
                await client.execute(plan, {"input": warm}, timeout_s=10)
            return True

        await wait_until(plans_answer, 60, "every plan answering", 0.2, retry_on=(MeshError,))
        mlp_v1 = [
            e.instance_id
            for m in await client.list_models(names["mlp"])
            for e in m.endpoints
            if e.version == "1"
        ]
        assert len(mlp_v1) == 2, mlp_v1
        await client.inject_fault(
            names["mlp"], instance_id=mlp_v1[0], abort_rate=0.3, duration_ms=600_000
        )

        stop = asyncio.Event()
        traffic = asyncio.create_task(_traffic(client, names, stop))
        try:
            await _discovered(server, orch_id, names)
            missing = await _until_every_panel_has_data(server)
            assert not missing, f"panels without data: {missing}"
            await _rules_evaluate(server, names)
        finally:
            stop.set()
            sent = await traffic
        assert sent > 0


async def _discovered(server: PrometheusServer, orch_id: str, names: dict[str, str]) -> None:
    """Every process of the mesh is a healthy target with the deployed relabelling applied, and
    each target's exposition passes ``promtool check metrics``."""
    wanted_models = {names["scaler"], names["mlp"], names["logreg"]}

    def targets() -> list[dict] | None:
        active = server.api("targets", state="active")["activeTargets"]
        mine = [
            t
            for t in active
            if t["labels"].get(catalog.L_INSTANCE) == orch_id
            or t["discoveredLabels"].get("__meta_consul_service") in wanted_models
        ]
        # 5 replicas + the orchestrator, each scraped at least once and up.
        if len(mine) == 6 and all(t["health"] == "up" for t in mine):
            return mine
        return None

    found = await wait_until(targets, 60, "Prometheus scraping all 6 processes (up)", 0.5)
    roles = sorted(t["labels"].get(catalog.L_ROLE, "") for t in found)
    assert roles == ["model"] * 5 + ["orchestrator"], roles
    for target in found:
        assert target["labels"].get(catalog.L_SERVICE), target["labels"]
        scrape_and_validate(target["scrapeUrl"])


async def _until_every_panel_has_data(server: PrometheusServer) -> list[str]:
    """Evaluate every panel query (instant queries at 'now') until all return samples; the
    panels still empty when time runs out."""
    queries = _panel_queries()
    assert len(queries) >= 25
    missing: list[str] = []

    def all_have_data() -> bool:
        missing[:] = [
            f"{title}: {expr}" for title, expr in queries if not _finite(server.query(expr))
        ]
        return not missing

    try:
        await wait_until(all_have_data, 120, "every dashboard panel returning data", 1.0)
    except AssertionError:
        pass  # reported by the caller, with the queries still empty
    return missing


def _finite(result: list[dict]) -> list[dict]:
    return [r for r in result if r["value"][1] not in ("NaN", "+Inf", "-Inf")]


async def _rules_evaluate(server: PrometheusServer, names: dict[str, str]) -> None:
    """The deployed rules load and evaluate without errors on real series; the recording rules
    have the mesh's plans and shadow candidate in them."""
    groups = server.api("rules")["groups"]
    rules = [r for g in groups for r in g["rules"]]
    assert len(rules) >= 10 and all(r["health"] == "ok" for r in rules), [
        (r["name"], r.get("lastError")) for r in rules if r["health"] != "ok"
    ]

    def recorded() -> bool:
        plans = {
            r["metric"].get(catalog.L_PLAN)
            for r in server.query("plan:meshserve_plan_error_ratio:rate1m")
        }
        candidates = {
            r["metric"].get(catalog.L_CANDIDATE)
            for r in server.query("candidate:meshserve_shadow_agreement_ratio:rate5m")
        }
        return names["pipeline"] in plans and f"{names['mlp']}@2" in candidates

    await wait_until(recorded, 60, "recording rules over the mesh's series", 1.0)
