"""Fuzz suite: hostile messages at real servers in real processes (ModelService.Infer, KServe V2
ModelInfer, Orchestrator.Execute, Orchestrator.Feedback, Admin.ApplyPlan, the typed Predict of a
replica and Execute of a plan, and undecodable raw bytes at every method).

Every call has a deadline. A pass means: no INTERNAL/UNKNOWN (or any status outside
fuzz_strategies.CLEAN), no DEADLINE_EXCEEDED, the server answers a good request afterwards, its
RSS and open file descriptors (Consul connections included) stay bounded, and no python plan
target outside the allow-list was imported.

CI size: ``MESSAGES`` (2000) per service, `BATCH` per Hypothesis example sent concurrently over
one channel. Nightly: ``MESHSERVE_FUZZ_EXAMPLES=100000 pytest -m fuzz -s`` (docs/CONTRACTS.md).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meshserve.contracts.naming import field_numbers
from meshserve.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    grpc_predict_v2_pb2_grpc,
    model_pb2,
    model_pb2_grpc,
    orchestrator_pb2,
    orchestrator_pb2_grpc,
    plan_pb2,
    tensor_pb2,
)
from tests.integration import fuzz_strategies as fz
from tests.integration.orchestrator_helpers import TOKEN, Procs
from tests.procs import ChildProcess
from tests.wire import len_field

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.fuzz]

AUTH = (("authorization", f"Bearer {TOKEN}"),)
MAX_RSS_GROWTH_KIB = 128 * 1024
MAX_FD_GROWTH = 16
PLANS = [
    "name: fuzz-echo\npython: tests.integration.python_plans:echo\n",
    "name: fuzz-model\ninputs: [{name: input, dtype: float32, shape: [-1, 64]}]\n"
    "steps: [{name: lr, model: logreg, inputs: [input.input]}]\n"
    "outputs: {label: lr.label}\n",
    "name: fuzz-select\ninputs: [{name: input, dtype: float32, shape: [-1, 64]}]\n"
    "steps:\n- name: route\n  inputs: {input: input.input}\n  select:\n    cases:\n"
    "    - {when: \"'tier' in attributes and attributes['tier'] == 'gold'\", branch: {name: a, "
    "model: logreg}}\n    - {when: \"inputs['input'].shape[0] > 8\", branch: {name: b, model: "
    "logreg}}\n    default: {name: c, model: logreg}\noutputs: {label: route.label}\n",
]
MARKER_MODULE = "fuzz_import_marker"


@dataclass
class Mesh:
    replica: ChildProcess  # wide_mlp as "fuzz", not registered
    orchestrator: ChildProcess
    replica_channel: grpc.Channel
    orchestrator_channel: grpc.Channel
    marker: Path  # written if MARKER_MODULE is ever imported


@pytest.fixture(scope="module")
def mesh(
    consul_addr: str, models_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Mesh]:
    tmp = tmp_path_factory.mktemp("fuzz")
    marker = tmp / "imported"
    (tmp / f"{MARKER_MODULE}.py").write_text(
        f"open({str(marker)!r}, 'w').write('imported')\ndef run(inputs, ctx):\n    return inputs\n"
    )
    procs = Procs(tmp)
    replica_channel = orchestrator_channel = None
    try:
        procs.model(models_dir, "logreg", consul_addr)
        replica = procs.spawn(
            "model", "serve", str(models_dir / "wide_mlp.onnx"), "--name", "fuzz",
            "--no-register", "--metrics-port", "-1", "--batch-wait-us", "500",
            "--max-elements", "100000", "--threads", "1",
        )  # fmt: skip
        orchestrator = procs.spawn(
            "orchestrator", "serve", "--consul", consul_addr, "--kv-prefix", procs.kv_prefix,
            "--no-learning", "--metrics-port", "-1",
            "--python-module", "tests.integration.python_plans",
            env={"MESHSERVE_ADMIN_TOKEN": TOKEN, "PYTHONPATH": str(tmp)},
        )  # fmt: skip
        options = [("grpc.max_send_message_length", 64 << 20)]
        replica_channel = grpc.insecure_channel(replica.address, options=options)
        orchestrator_channel = grpc.insecure_channel(orchestrator.address, options=options)
        admin = admin_pb2_grpc.AdminStub(orchestrator_channel)
        for text in PLANS:
            admin.ApplyPlan(admin_pb2.ApplyPlanRequest(plan_text=text), metadata=AUTH, timeout=30)
        yield Mesh(replica, orchestrator, replica_channel, orchestrator_channel, marker)
    finally:
        for channel in (replica_channel, orchestrator_channel):
            if channel is not None:
                channel.close()
        procs.stop_all()


FUZZ_SETTINGS = settings(
    max_examples=max(1, fz.MESSAGES // fz.BATCH),
    deadline=None,
    database=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,
        HealthCheck.filter_too_much,
    ],
)


def batches(strategy: st.SearchStrategy) -> st.SearchStrategy:
    return st.lists(strategy, min_size=fz.BATCH, max_size=fz.BATCH)


def _good_infer(channel: grpc.Channel) -> None:
    x = np.zeros((2, 64), dtype=np.float32)
    request = model_pb2.InferRequest()
    request.inputs["input"].CopyFrom(tensor_pb2.Tensor(dtype=1, shape=[2, 64], data=x.tobytes()))
    model_pb2_grpc.ModelServiceStub(channel).Infer(request, timeout=10)


def _good_execute(channel: grpc.Channel) -> None:
    x = np.zeros((2, 64), dtype=np.float32)
    stub = orchestrator_pb2_grpc.OrchestratorStub(channel)
    for plan in ("fuzz-echo", "fuzz-model", "fuzz-select"):
        request = orchestrator_pb2.ExecuteRequest(plan=plan)
        request.inputs["input"].CopyFrom(
            tensor_pb2.Tensor(dtype=1, shape=[2, 64], data=x.tobytes())
        )
        stub.Execute(request, timeout=10)


def _run(mesh: Mesh, proc: ChildProcess, label: str, fuzz, good) -> None:
    good()
    before = fz.usage(proc.pid)
    tally = fz.Tally()
    fuzz(tally)
    after = fz.usage(proc.pid)
    print(
        f"\n{label}: {tally.sent} messages, statuses {tally.codes}; RSS {before.rss_kib // 1024} "
        f"-> {after.rss_kib // 1024} MiB, fds {before.fds} -> {after.fds}"
    )
    if os.environ.get("MESHSERVE_FUZZ_VERBOSE"):
        print("\n".join(f"  {code}: {samples}" for code, samples in tally.samples.items()))
    assert not tally.failures, "\n".join(tally.failures)
    assert proc.process is not None and proc.process.poll() is None
    assert after.rss_kib - before.rss_kib < MAX_RSS_GROWTH_KIB, (before, after)
    assert after.fds - before.fds <= MAX_FD_GROWTH, (before, after)
    assert not mesh.marker.exists(), "a python target outside the allow-list was imported"
    good()  # the server still answers a good request


def test_fuzz_model_infer(mesh: Mesh) -> None:
    stub = model_pb2_grpc.ModelServiceStub(mesh.replica_channel)

    def fuzz(tally: fz.Tally) -> None:
        @FUZZ_SETTINGS
        @given(batches(fz.infer_requests()))
        def run(messages) -> None:
            fz.send_batch(stub.Infer, messages, tally)

        run()

    _run(mesh, mesh.replica, "ModelService.Infer", fuzz, lambda: _good_infer(mesh.replica_channel))


def test_fuzz_v2_model_infer(mesh: Mesh) -> None:
    stub = grpc_predict_v2_pb2_grpc.GRPCInferenceServiceStub(mesh.replica_channel)

    def fuzz(tally: fz.Tally) -> None:
        @FUZZ_SETTINGS
        @given(batches(fz.v2_requests()))
        def run(messages) -> None:
            fz.send_batch(stub.ModelInfer, messages, tally)

        run()

    _run(mesh, mesh.replica, "V2 ModelInfer", fuzz, lambda: _good_infer(mesh.replica_channel))


def test_fuzz_execute(mesh: Mesh) -> None:
    stub = orchestrator_pb2_grpc.OrchestratorStub(mesh.orchestrator_channel)

    def fuzz(tally: fz.Tally) -> None:
        @FUZZ_SETTINGS
        @given(batches(fz.execute_requests()))
        def run(messages) -> None:
            fz.send_batch(stub.Execute, messages, tally)

        run()

    good = lambda: _good_execute(mesh.orchestrator_channel)  # noqa: E731
    _run(mesh, mesh.orchestrator, "Orchestrator.Execute", fuzz, good)


def test_fuzz_feedback(mesh: Mesh) -> None:
    stub = orchestrator_pb2_grpc.OrchestratorStub(mesh.orchestrator_channel)

    def fuzz(tally: fz.Tally) -> None:
        @FUZZ_SETTINGS
        @given(batches(fz.feedback_requests()))
        def run(messages) -> None:
            fz.send_batch(stub.Feedback, messages, tally)

        run()

    good = lambda: _good_execute(mesh.orchestrator_channel)  # noqa: E731
    _run(mesh, mesh.orchestrator, "Orchestrator.Feedback", fuzz, good)


def test_fuzz_apply_plan(mesh: Mesh) -> None:
    stub = admin_pb2_grpc.AdminStub(mesh.orchestrator_channel)

    def fuzz(tally: fz.Tally) -> None:
        @FUZZ_SETTINGS
        @given(batches(fz.apply_requests()))
        def run(messages) -> None:
            fz.send_batch(stub.ApplyPlan, messages, tally, metadata=AUTH)

        run()

    good = lambda: _good_execute(mesh.orchestrator_channel)  # noqa: E731
    _run(mesh, mesh.orchestrator, "Admin.ApplyPlan", fuzz, good)
    plans = stub.ListPlans(admin_pb2.ListPlansRequest(), metadata=AUTH, timeout=10)
    assert {"fuzz-echo", "fuzz-model", "fuzz-select"} <= {p.name for p in plans.plans}


MODEL_METHODS = [
    "/meshserve.v1.ModelService/Infer",
    "/meshserve.v1.ModelService/GetMetadata",
    "/inference.GRPCInferenceService/ModelInfer",
    "/inference.GRPCInferenceService/ModelMetadata",
    "/inference.GRPCInferenceService/ModelReady",
]
ORCHESTRATOR_METHODS = [
    "/meshserve.v1.Orchestrator/Execute",
    "/meshserve.v1.Orchestrator/Feedback",
    "/meshserve.v1.Admin/ApplyPlan",
    "/meshserve.v1.Admin/GetPlan",
    "/meshserve.v1.Admin/DeletePlan",
    "/meshserve.v1.Admin/SetTrafficSplit",
    "/meshserve.v1.Admin/InjectFault",
    "/meshserve.v1.Admin/ListShadowDisagreements",
]
raw_bodies = st.one_of(
    st.binary(min_size=1, max_size=256),
    st.sampled_from([b"\xff" * 8, b"\x0a\xff\xff\xff\xff\x0f", b"\x0a" * 200]),
)


@pytest.mark.parametrize("target", ["replica", "orchestrator"])
def test_fuzz_raw_bytes(mesh: Mesh, target: str) -> None:
    """Undecodable bodies: INVALID_ARGUMENT (or a clean answer when the bytes happen to parse)."""
    channel = mesh.replica_channel if target == "replica" else mesh.orchestrator_channel
    proc = mesh.replica if target == "replica" else mesh.orchestrator
    methods = MODEL_METHODS if target == "replica" else ORCHESTRATOR_METHODS
    calls = {m: channel.unary_unary(m) for m in methods}
    seen: set[str] = set()

    def fuzz(tally: fz.Tally) -> None:
        @FUZZ_SETTINGS
        @given(st.sampled_from(methods), batches(raw_bodies))
        def run(method: str, bodies: list[bytes]) -> None:
            before = tally.codes.get("INVALID_ARGUMENT", 0)
            fz.send_batch(calls[method], bodies, tally, metadata=AUTH)
            if tally.codes.get("INVALID_ARGUMENT", 0) > before:
                seen.add(method)

        run()

    good = (
        (lambda: _good_infer(channel)) if target == "replica" else (lambda: _good_execute(channel))
    )
    _run(mesh, proc, f"raw bytes at the {target}", fuzz, good)
    assert seen, "no undecodable body was answered INVALID_ARGUMENT"


def test_good_plan_still_applies(mesh: Mesh) -> None:
    stub = admin_pb2_grpc.AdminStub(mesh.orchestrator_channel)
    plan = plan_pb2.Plan(name="fuzz-after", python="tests.integration.python_plans:echo")
    response = stub.ApplyPlan(admin_pb2.ApplyPlanRequest(plan=plan), metadata=AUTH, timeout=30)
    assert response.version >= 1


# The typed services of the mesh above (meshserve.contracts; numbers from the tensor names).
TYPED_PREDICT = "/meshserve.models.fuzz.v1.Fuzz/Predict"
TYPED_EXECUTE = "/meshserve.plans.fuzz_model.v1.FuzzModel/Execute"
TYPED_NUMBERS = (1, 2, 3, 4, field_numbers(["input"])["input"])


def _good_typed(channel: grpc.Channel, path: str) -> None:
    good = len_field(TYPED_NUMBERS[-1], np.zeros(128, dtype="<f4").tobytes())
    channel.unary_unary(path)(good, timeout=10)


def test_fuzz_typed_predict(mesh: Mesh) -> None:
    call = mesh.replica_channel.unary_unary(TYPED_PREDICT)

    def fuzz(tally: fz.Tally) -> None:
        @FUZZ_SETTINGS
        @given(batches(fz.typed_messages(TYPED_NUMBERS)))
        def run(messages) -> None:
            fz.send_batch(call, messages, tally)

        run()

    _run(
        mesh, mesh.replica, "typed Predict", fuzz,
        lambda: _good_typed(mesh.replica_channel, TYPED_PREDICT),
    )  # fmt: skip


def test_fuzz_typed_execute(mesh: Mesh) -> None:
    channel = mesh.orchestrator_channel
    paths = st.sampled_from(
        [TYPED_EXECUTE] * 6
        + [
            "/meshserve.plans.fuzz_model.v9.FuzzModel/Execute",
            "/meshserve.plans.no_plan.v1.NoPlan/Execute",
            "/meshserve.plans.fuzz_model.v1.FuzzModel/Nope",
            "/meshserve.plans.x/Execute",
        ]
    )

    def fuzz(tally: fz.Tally) -> None:
        @FUZZ_SETTINGS
        @given(st.lists(st.tuples(paths, fz.typed_messages(TYPED_NUMBERS)), min_size=fz.BATCH,
                        max_size=fz.BATCH))  # fmt: skip
        def run(items) -> None:
            futures = [
                (channel.unary_unary(p).future(m, timeout=fz.DEADLINE_S), p) for p, m in items
            ]
            for future, path in futures:
                try:
                    future.result()
                    tally.add(grpc.StatusCode.OK, "", path)
                except grpc.RpcError as exc:
                    tally.add(exc.code(), exc.details() or "", path)

        run()

    _run(
        mesh, mesh.orchestrator, "typed Execute", fuzz, lambda: _good_typed(channel, TYPED_EXECUTE)
    )
