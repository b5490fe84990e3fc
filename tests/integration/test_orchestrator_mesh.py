"""The orchestrator as a process over real model services and a real Consul agent.

One module-scoped mesh: scaler, logreg, mlp, forest replicas and one orchestrator.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

from meshserve.clients.sdk import MeshServeClient
from meshserve.errors import InvalidInputError, MeshError, NotFoundError
from meshserve.v1 import admin_pb2
from tests.integration.orchestrator_helpers import TOKEN, Procs
from tests.reference import onnx_outputs
from tests.waiting import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PLANS = Path(__file__).resolve().parents[2] / "examples" / "plans"
MODELS = ("scaler", "logreg", "mlp", "forest")


@pytest.fixture(scope="module")
def mesh_procs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Procs]:
    with Procs(tmp_path_factory.mktemp("mesh")) as procs:
        yield procs


@pytest.fixture(scope="module")
def mesh(mesh_procs: Procs, consul_addr: str, models_dir: Path) -> str:
    """Address of the orchestrator in front of scaler, logreg, mlp and forest replicas."""
    for name in MODELS:
        mesh_procs.model(models_dir, name, consul_addr)
    orch = mesh_procs.orchestrator(
        consul_addr, "--python-plan", "digits-pipeline-py=examples.programmatic:Pipeline"
    )
    return orch.address


@pytest.fixture(scope="module")
def digits(models_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    data = np.load(models_dir / "digits_test.npz")
    return data["X"][:64].astype(np.float32), data["y"][:64]


async def _apply(client: MeshServeClient, file: str, deadline_s: float = 20.0) -> int:
    """Apply a plan file, waiting until its models are discoverable."""
    text = (PLANS / file).read_text()

    async def applied() -> int | None:
        try:
            return (await client.apply_plan(text))[1]
        except MeshError as exc:
            if exc.code != grpc.StatusCode.INVALID_ARGUMENT or "unknown model" not in exc.message:
                raise
            return None

    return await wait_until(applied, deadline_s, f"{file}'s models discoverable", 0.2, retry_on=())


async def test_pipeline_and_ensemble_match_in_process(mesh, digits, models_dir):
    x, y = digits
    async with MeshServeClient(mesh, token=TOKEN) as client:
        await _apply(client, "pipeline.yaml")
        await _apply(client, "ensemble.yaml")
        pipe = await client.execute("digits-pipeline", {"input": x})
        ens = await client.execute("digits-ensemble", {"input": x})
    scaled = onnx_outputs(models_dir, "scaler", x)["scaled"]
    mlp = onnx_outputs(models_dir, "mlp", scaled)
    np.testing.assert_array_equal(pipe.outputs["label"], mlp["label"])
    np.testing.assert_allclose(pipe.outputs["probabilities"], mlp["probabilities"], rtol=1e-6)
    labels = np.stack(
        [onnx_outputs(models_dir, m, scaled)["label"] for m in ("logreg", "mlp", "forest")]
    )
    votes = np.stack([(labels == k).sum(axis=0) for k in range(10)])
    np.testing.assert_array_equal(ens.outputs["label"], votes.argmax(axis=0))
    assert (ens.outputs["label"] == y).mean() > 0.9
    assert len(pipe.trace_id) == 32


async def test_traces_and_dry_run(mesh, digits):
    x, _ = digits
    async with MeshServeClient(mesh, token=TOKEN) as client:
        await _apply(client, "pipeline.yaml")
        before = {p.name: p.active_version for p in await client.list_plans()}
        text = (PLANS / "pipeline.yaml").read_text()
        assert await client.apply_plan(text, dry_run=True) == (
            "digits-pipeline",
            before["digits-pipeline"],
        )
        after = {p.name: p.active_version for p in await client.list_plans()}
        assert after == before
        result = await client.execute("digits-pipeline", {"input": x[:4]})

        async def complete() -> bool:
            try:
                trace = await client.get_trace(result.trace_id)
            except MeshError as exc:
                if exc.code != grpc.StatusCode.NOT_FOUND:
                    raise
                return False
            return {"plan digits-pipeline", "step scaler", "step mlp"} <= {
                s.name for s in trace.spans
            }

        await wait_until(complete, 5, "the complete trace", retry_on=())
        slowest = await client.list_traces(5)
        assert 0 < len(slowest.traces) <= 5


async def test_programmatic_twin_equals_declarative(mesh, digits):
    x, _ = digits
    async with MeshServeClient(mesh, token=TOKEN) as client:
        await _apply(client, "pipeline.yaml")
        declarative = await client.execute("digits-pipeline", {"input": x})
        python = await client.execute("digits-pipeline-py", {"input": x})
        kinds = {p.name: p.kind for p in await client.list_plans()}
    assert kinds["digits-pipeline-py"] == "python"
    np.testing.assert_array_equal(python.outputs["label"], declarative.outputs["label"])
    np.testing.assert_array_equal(
        python.outputs["probabilities"], declarative.outputs["probabilities"]
    )


async def test_select_and_split(mesh, digits):
    x, _ = digits
    async with MeshServeClient(mesh, token=TOKEN) as client:
        await _apply(client, "select.yaml")
        await _apply(client, "split.yaml")
        gold = await client.execute("digits-select", {"input": x[:2]}, attributes={"tier": "gold"})
        big = await client.execute("digits-select", {"input": x[:20]})
        small = await client.execute("digits-select", {"input": x[:2]})
        assert (gold.decisions, big.decisions, small.decisions) == (
            {"route": "mlp"},
            {"route": "forest"},
            {"route": "logreg"},
        )
        keys = [f"user-{i}" for i in range(300)]
        first = await asyncio.gather(
            *(client.execute("digits-split", {"input": x[:1]}, routing_key=k) for k in keys)
        )
        chosen = {k: r.decisions["canary"] for k, r in zip(keys, first, strict=True)}
        share = sum(v == "canary" for v in chosen.values()) / len(keys)
        assert 0.13 < share < 0.27, share
        again = await asyncio.gather(
            *(client.execute("digits-split", {"input": x[:1]}, routing_key=k) for k in keys[:40])
        )
        assert all(
            r.decisions["canary"] == chosen[k] for k, r in zip(keys[:40], again, strict=True)
        )
        stats = await client.stats()
    by_plan = {p.plan: p for p in stats.plans}
    assert (
        by_plan["digits-split"].decisions["canary/canary"]
        + by_plan["digits-split"].decisions["canary/stable"]
        == 340
    )


async def test_shadow_records_agreement_and_ignores_slow_or_failing_candidate(mesh, digits):
    x, _ = digits
    async with MeshServeClient(mesh, token=TOKEN) as client:
        await _apply(client, "shadow.yaml")
        await client.execute("digits-shadow", {"input": x})  # warm up
        for _ in range(4):
            await client.execute("digits-shadow", {"input": x})
        # A slow candidate: every call to forest is delayed 400 ms.
        await client.inject_fault("forest", delay_ms=400, duration_ms=20_000)
        start = time.monotonic()
        slow = await client.execute("digits-shadow", {"input": x})
        elapsed = time.monotonic() - start
        assert elapsed < 0.35, f"the response waited for the slow candidate ({elapsed:.3f}s)"
        await client.clear_faults("forest")
        # A failing candidate: every call to forest is aborted.
        await client.inject_fault("forest", abort_rate=1.0, abort_code=14, duration_ms=20_000)
        failing = await client.execute("digits-shadow", {"input": x})
        np.testing.assert_array_equal(failing.outputs["label"], slow.outputs["label"])

        async def delayed_candidate_done() -> Any:  # it finishes in the background
            stats = await client.stats()
            shadow = next((s for s in stats.shadows if s.plan == "digits-shadow"), None)
            done = shadow is not None and shadow.compared >= 6 * len(x)
            return shadow if done and shadow.candidate_errors >= 1 else None

        shadow = await wait_until(delayed_candidate_done, 10, "the shadow comparisons", 0.1)
        await client.clear_faults("forest")
    assert shadow.compared >= 6 * len(x)  # rows of every request with a healthy candidate
    assert 0.8 * shadow.compared <= shadow.agreed <= shadow.compared
    assert shadow.candidate_errors >= 1
    assert shadow.candidate_latency_p50_ms > 0 and shadow.primary_latency_p50_ms > 0


async def test_invalid_plan_is_refused_naming_step_and_field(mesh):
    bad = """
name: bad-dtype
inputs: [{name: input, dtype: float64, shape: [-1, 64]}]
steps:
  - {name: scaler, model: scaler, inputs: {input: input.input}}
outputs: {scaled: scaler.scaled}
"""
    missing = """
name: bad-model
steps:
  - {name: first, model: no-such-model, inputs: {input: input.input}}
outputs: {x: first.x}
"""
    cycle = """
name: bad-cycle
steps:
  - {name: a, model: scaler, inputs: {input: b.scaled}}
  - {name: b, model: scaler, inputs: {input: a.scaled}}
outputs: {x: a.scaled}
"""
    async with MeshServeClient(mesh, token=TOKEN) as client:
        with pytest.raises(InvalidInputError) as err:
            await client.apply_plan(bad)
        assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT
        assert err.value.message == (
            "step 'scaler' input 'input': expects float32 [-1,64], wired to 'input.input' "
            "float64 [-1,64]"
        )
        with pytest.raises(InvalidInputError, match="step 'first': unknown model 'no-such-model'"):
            await client.apply_plan(missing)
        with pytest.raises(InvalidInputError, match="cycle: a -> b -> a"):
            await client.apply_plan(cycle)
        with pytest.raises(InvalidInputError, match="neither valid YAML nor JSON"):
            await client.apply_plan("name: [unclosed")
        names = {p.name for p in await client.list_plans()}
    assert not names & {"bad-dtype", "bad-model", "bad-cycle"}


async def test_execute_errors_and_stream(mesh, digits):
    x, _ = digits
    async with MeshServeClient(mesh, token=TOKEN) as client:
        await _apply(client, "pipeline.yaml")
        with pytest.raises(InvalidInputError) as err:
            await client.execute("digits-pipeline", {"input": x[:, :10]})
        assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT
        assert "expects float32 [-1,64], got float32 [64, 10]" in err.value.message
        with pytest.raises(NotFoundError) as err:
            await client.execute("no-such-plan", {"input": x})
        assert err.value.code == grpc.StatusCode.NOT_FOUND

        async def requests():
            for i in range(20):
                rows = x[i : i + 1] if i != 7 else x[i : i + 1, :3]
                yield client.request(f"r{i}", "digits-pipeline", {"input": rows})

        results = [r async for r in client.execute_stream(requests())]
    assert len(results) == 20
    errors = [r for r in results if isinstance(r, MeshError)]
    assert len(errors) == 1 and isinstance(errors[0], InvalidInputError)
    assert errors[0].code == grpc.StatusCode.INVALID_ARGUMENT
    assert errors[0].request_id == "r7"
    ok = {r.request_id for r in results if not isinstance(r, MeshError)}
    assert ok == {f"r{i}" for i in range(20)} - {"r7"}


async def test_every_admin_method_requires_the_token(mesh):
    service = admin_pb2.DESCRIPTOR.services_by_name["Admin"]
    channel = grpc.aio.insecure_channel(mesh)
    try:
        for method in service.methods:
            call = channel.unary_unary(
                f"/{service.full_name}/{method.name}",
                request_serializer=lambda m: m.SerializeToString(),
                response_deserializer=lambda b: b,
            )
            request = method.input_type._concrete_class()
            for metadata in ((), (("authorization", "Bearer wrong"),), (("authorization", TOKEN),)):
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await call(request, metadata=metadata, timeout=5)
                assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED, method.name
            # the right token gets past authentication (whatever the method then answers)
            try:
                await call(request, metadata=(("authorization", f"Bearer {TOKEN}"),), timeout=5)
            except grpc.aio.AioRpcError as exc:
                assert exc.code() != grpc.StatusCode.UNAUTHENTICATED, method.name
    finally:
        await channel.close()


async def test_list_models_and_traffic_policy(mesh, digits):
    x, _ = digits
    async with MeshServeClient(mesh, token=TOKEN) as client:
        await _apply(client, "pipeline.yaml")
        await client.execute("digits-pipeline", {"input": x[:2]})
        models = {m.name: m for m in await client.list_models()}
        assert set(MODELS) <= set(models)
        assert models["mlp"].versions == ["1"]
        assert models["mlp"].endpoints and models["mlp"].endpoints[0].state == "passing"
        await client.set_traffic_split("mlp", {"1": 1.0})
        policies = await client.list_traffic_policies()
        assert [(p.model, dict(p.version_weights)) for p in policies] == [("mlp", {"1": 1.0})]
        result = await client.execute("digits-pipeline", {"input": x[:2]})
        assert result.outputs["label"].shape == (2,)
        with pytest.raises(InvalidInputError) as err:
            await client.set_traffic_split("mlp", {"1": -1.0})
        assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "meshserve.clients.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_cli_commands(mesh, digits, tmp_path):
    x, _ = digits
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    conn = ("--orchestrator", mesh, "--token-file", str(token_file))
    applied = _cli("plans", "apply", str(PLANS / "pipeline.yaml"), *conn)
    assert applied.returncode == 0, applied.stderr
    assert "plan digits-pipeline applied as version" in applied.stdout
    listed = _cli("plans", "list", *conn)
    assert listed.returncode == 0 and "digits-pipeline " in listed.stdout
    assert listed.stdout.splitlines()[0].split() == [
        "PLAN", "KIND", "ACTIVE", "VERSIONS", "DESCRIPTION"
    ]  # fmt: skip
    got = _cli("plans", "get", "digits-pipeline", *conn)
    assert got.returncode == 0 and '"name": "digits-pipeline"' in got.stdout
    np.save(tmp_path / "x.npy", x[:3])
    called = _cli("call", "digits-pipeline", "--input", f"input={tmp_path / 'x.npy'}", *conn)
    assert called.returncode == 0, called.stderr
    assert "label: int64 [3]" in called.stdout
    models = _cli("models", *conn)
    assert models.returncode == 0 and "mlp" in models.stdout and "passing" in models.stdout
    stats = _cli("stats", *conn)
    assert stats.returncode == 0 and "digits-pipeline" in stats.stdout
    (tmp_path / "wrong").write_text("wrong")
    denied = _cli("plans", "list", "--orchestrator", mesh, "--token-file", str(tmp_path / "wrong"))
    assert denied.returncode == 1 and "UNAUTHENTICATED" in denied.stderr
    in_argv = _cli("plans", "list", "--orchestrator", mesh, "--token", TOKEN)
    assert (
        in_argv.returncode == 2 and "--token-file PATH or $MESHSERVE_ADMIN_TOKEN" in in_argv.stderr
    )
    bad = _cli("call", "digits-pipeline", "--input", "input=[[1.0, 2.0]]", *conn)
    assert bad.returncode == 1 and "INVALID_ARGUMENT" in bad.stderr


async def test_bandit_and_feedback(mesh, digits, tmp_path):
    x, _ = digits
    async with MeshServeClient(mesh, token=TOKEN) as client:
        await _apply(client, "bandit.yaml")
        arms = set()
        for i in range(12):
            result = await client.execute(
                "digits-bandit", {"input": x[:2]}, request_id=f"bandit-{i}",
                attributes={"segment": "a"},
            )  # fmt: skip
            arms.add(result.decisions["chooser"])

            assert result.feedback_token  # any orchestrator of the group can apply it
            applied = await client.feedback(f"bandit-{i}", reward=1.0)
            assert applied == ["digits-bandit/chooser"]
        assert arms <= {"mlp", "logreg"}
        again = await client.rate("bandit-0", reward=1.0)  # already rated: said, not applied
        assert again.duplicate and again.already_applied == ("digits-bandit/chooser",)
        with pytest.raises(InvalidInputError) as err:
            await client.feedback("bandit-1", reward=3.0)
        assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT
        stats = await client.stats()
    bandit = next(b for b in stats.bandits if b.plan == "digits-bandit")
    assert sum(a.pulls for a in bandit.arms) == 12
    assert sum(a.reward_sum for a in bandit.arms) == pytest.approx(12.0)
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    conn = ("--orchestrator", mesh, "--token-file", str(token_file))
    listing = _cli("learning", *conn)
    assert listing.returncode == 0 and "digits-bandit  chooser" in listing.stdout, listing
    reset = _cli("learning", "reset", "--plan", "digits-bandit", "--step", "chooser", *conn)
    assert reset.returncode == 0 and "bandit digits-bandit/chooser: reset" in reset.stdout, reset
    async with MeshServeClient(mesh, token=TOKEN) as client:
        stats = await client.stats()
    bandit = next(b for b in stats.bandits if b.plan == "digits-bandit")
    assert sum(a.reward_sum for a in bandit.arms) == 0.0


async def test_a_second_orchestrator_serves_the_same_plans(mesh, mesh_procs, consul_addr, digits):
    x, _ = digits
    async with MeshServeClient(mesh, token=TOKEN) as first:
        await _apply(first, "pipeline.yaml")
        want = await first.execute("digits-pipeline", {"input": x})
        second = mesh_procs.orchestrator(consul_addr, "--no-learning")
        async with MeshServeClient(second.address, token=TOKEN) as other:
            got = await other.execute("digits-pipeline", {"input": x})
            np.testing.assert_array_equal(got.outputs["label"], want.outputs["label"])
            name, version = await other.apply_plan((PLANS / "ensemble.yaml").read_text())

            async def first_sees_it() -> bool:
                plans = {p.name: p.active_version for p in await first.list_plans()}
                return plans.get(name) == version

            await wait_until(
                first_sees_it, 10, "the first orchestrator to see the new version", 0.05
            )
            a = await first.execute(name, {"input": x})
            b = await other.execute(name, {"input": x})
            assert a.plan_version == b.plan_version == version
            np.testing.assert_array_equal(a.outputs["label"], b.outputs["label"])
        assert second.stop() == 0
