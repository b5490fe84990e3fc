"""Hypothesis strategies and a batch sender for the service fuzz suite (test_fuzz_services.py).

Messages are hostile on purpose: ranks past numpy's 64, dimensions whose product overflows,
64 KiB names, thousands of inputs, deep and aliased YAML, wrong types anywhere in a plan,
expressions that recurse or allocate, python targets outside the allow-list, raw bytes.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import yaml
from hypothesis import strategies as st

from meshserve.v1 import admin_pb2, model_pb2, orchestrator_pb2, plan_pb2, tensor_pb2
from meshserve.v1 import grpc_predict_v2_pb2 as v2
from tests.wire import varint

# Messages per service: a CI-sized run by default, MESHSERVE_FUZZ_EXAMPLES=100000 nightly.
MESSAGES = int(os.environ.get("MESHSERVE_FUZZ_EXAMPLES", "2000"))
BATCH = 20  # messages per Hypothesis example, sent concurrently over one channel
DEADLINE_S = 20.0  # every call has one; DEADLINE_EXCEEDED on a hostile input is a failure
# Statuses a handler may answer hostile input with. INTERNAL, UNKNOWN, DEADLINE_EXCEEDED,
# UNAVAILABLE and CANCELLED are failures.
CLEAN = frozenset(
    {
        grpc.StatusCode.OK,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.ALREADY_EXISTS,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.OUT_OF_RANGE,
    }
)

# -- building blocks ----------------------------------------------------------------------------

good_names = st.sampled_from(["input", "input", "input", "x", "probabilities", "label"])
long_text = st.integers(min_value=100, max_value=70_000).map(lambda n: "n" * n)


def rarely_long(strategy: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """`strategy`, or one time in ten a string over every length limit."""
    return st.integers(min_value=0, max_value=9).flatmap(
        lambda i: long_text if i == 0 else strategy
    )


names = rarely_long(st.one_of(good_names, good_names, good_names, st.text(max_size=40)))
short_text = rarely_long(st.text(max_size=20))
dims = st.one_of(
    st.integers(min_value=-2, max_value=70),
    st.integers(min_value=1 << 20, max_value=(1 << 63) - 1),
)
shapes = st.one_of(
    st.just([2, 64]),
    st.just([1, 64]),
    st.lists(st.integers(min_value=-1, max_value=70), max_size=4),
    st.lists(dims, max_size=8),
    st.integers(min_value=33, max_value=100).map(lambda rank: [1] * rank),
    st.lists(dims, min_size=1, max_size=3).map(lambda s: [0, *s]),
)
blobs = st.one_of(
    st.binary(max_size=1024),
    st.integers(min_value=0, max_value=8).map(lambda rows: b"\x00\x00\x80\x7f" * 64 * rows),
    st.integers(min_value=0, max_value=8).map(lambda rows: b"\x00\x00\x80\x3f" * 64 * rows),
)
dtypes = st.one_of(st.just(1), st.integers(min_value=0, max_value=20))
tensors = st.builds(
    lambda dtype, shape, data: tensor_pb2.Tensor(dtype=dtype, shape=shape, data=data),
    dtypes,
    shapes,
    blobs,
)
many = st.integers(min_value=65, max_value=200)  # over max_inputs / max_attributes
# A well-formed float32 [rows, 64] tensor (NaN/inf included), so inference runs too.
rows = st.integers(min_value=1, max_value=8)
good_tensors = st.builds(
    lambda r, fill: tensor_pb2.Tensor(dtype=1, shape=[r, 64], data=fill * (64 * r)),
    rows,
    st.sampled_from(
        [b"\x00\x00\x80\x3f", b"\x00\x00\x00\x00", b"\x00\x00\xc0\x7f", b"\xff\xff\x7f\x7f"]
    ),
)


@st.composite
def tensor_maps(draw: st.DrawFn) -> dict[str, tensor_pb2.Tensor]:
    if draw(st.booleans()):
        return {"input": draw(good_tensors)}
    if draw(st.sampled_from(range(20))) == 5:
        tensor = draw(tensors)
        return {f"i{i}": tensor for i in range(draw(many))}
    return draw(st.dictionaries(names, tensors, max_size=3))


# -- ModelService / V2 --------------------------------------------------------------------------


@st.composite
def infer_requests(draw: st.DrawFn) -> model_pb2.InferRequest:
    request = model_pb2.InferRequest(
        id=draw(short_text),
        output_names=draw(st.lists(rarely_long(good_names), max_size=3)),
        timeout_ms=draw(st.integers(min_value=0, max_value=5000)),
    )
    for name, tensor in draw(tensor_maps()).items():
        request.inputs[name].CopyFrom(tensor)
    return request


V2_TYPES = ["FP32", "FP64", "FP16", "INT8", "INT32", "INT64", "UINT8", "BOOL", "BYTES", "X"]


@st.composite
def v2_requests(draw: st.DrawFn) -> v2.ModelInferRequest:
    request = v2.ModelInferRequest(
        model_name=draw(st.sampled_from(["fuzz"] * 8 + ["x", "n" * 70_000])),
        id=draw(short_text),
    )
    if draw(st.booleans()):
        good = draw(good_tensors)
        request.inputs.add(name="input", datatype="FP32", shape=good.shape)
        if draw(st.booleans()):
            request.raw_input_contents.append(good.data)
        else:
            values = np.frombuffer(good.data, dtype="<f4").tolist()
            request.inputs[0].contents.fp32_contents.extend(values)
        return request
    raw = draw(st.booleans())
    count = draw(
        st.sampled_from(range(20)).flatmap(
            lambda i: many if i == 5 else st.integers(min_value=0, max_value=2)
        )
    )
    datatype = draw(rarely_long(st.one_of(st.just("FP32"), st.sampled_from(V2_TYPES))))
    values = draw(st.lists(st.floats(width=32, allow_nan=True), max_size=200))
    blob, name, shape = draw(blobs), draw(names), draw(shapes)
    for i in range(count):
        tensor = request.inputs.add(
            name=name if i < 2 else f"{name}{i}", datatype=datatype, shape=shape
        )
        if raw:
            request.raw_input_contents.append(blob)
        else:
            tensor.contents.fp32_contents.extend(values)
    if raw and draw(st.booleans()):
        request.raw_input_contents.append(b"extra")
    for name in draw(st.lists(rarely_long(good_names), max_size=2)):
        request.outputs.add(name=name)
    return request


# -- Orchestrator.Execute -----------------------------------------------------------------------

PLANS = ["fuzz-echo", "fuzz-model", "fuzz-select", "missing"]


@st.composite
def execute_requests(draw: st.DrawFn) -> orchestrator_pb2.ExecuteRequest:
    request = orchestrator_pb2.ExecuteRequest(
        plan=draw(rarely_long(st.one_of(st.sampled_from(PLANS), st.text(max_size=10)))),
        id=draw(short_text),
        routing_key=draw(short_text),
        plan_version=draw(st.integers(min_value=0, max_value=3)),
        timeout_ms=draw(st.integers(min_value=0, max_value=5000)),
    )
    for name, tensor in draw(tensor_maps()).items():
        request.inputs[name].CopyFrom(tensor)
    if draw(st.sampled_from(range(20))) == 5:
        for i in range(draw(many)):
            request.attributes[f"a{i}"] = "v"
    else:
        values = rarely_long(st.one_of(st.sampled_from(["gold", "silver"]), st.text(max_size=20)))
        keys = rarely_long(st.one_of(st.just("tier"), st.text(max_size=20)))
        request.attributes.update(draw(st.dictionaries(keys, values, max_size=3)))
    return request


# -- Orchestrator.Feedback ----------------------------------------------------------------------

token_like = st.one_of(
    st.binary(max_size=300),
    st.binary(min_size=40, max_size=300).map(lambda b: b"\x01" + b),  # version byte, junk
    st.integers(min_value=65_000, max_value=70_000).map(lambda n: b"\x01" * n),  # over the limit
    st.just(b""),
)


@st.composite
def feedback_requests(draw: st.DrawFn) -> orchestrator_pb2.FeedbackRequest:
    request = orchestrator_pb2.FeedbackRequest(request_id=draw(short_text), token=draw(token_like))
    signal = draw(st.integers(min_value=0, max_value=2))
    if signal == 0:
        request.reward = draw(st.floats(allow_nan=True, allow_infinity=True))
    elif signal == 1:
        request.label = draw(st.integers(min_value=-(2**63), max_value=2**63 - 1))
    return request


# -- Admin.ApplyPlan ----------------------------------------------------------------------------

json_values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(allow_nan=True, allow_infinity=True),
        st.text(max_size=20),
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=30,
)
KINDS = ["model", "logic", "ensemble", "select", "split", "shadow", "bandit", "custom", "nope"]
expressions = st.one_of(
    st.sampled_from(
        [
            "attributes['tier'] == 'gold'",
            "inputs['input'].shape[0] > 8",
            "'x' * 100000000 == ''",
            "[0] * 10000000 == []",
            "len('%999999999d' % 1) > 0",
            "-" * 990 + "1",
            "not " * 300 + "True",
            "(" * 200 + "1" + ")" * 200,
            "__import__('os')",
            "inputs.__class__",
        ]
    ),
    st.text(max_size=60),
)


@st.composite
def steps(draw: st.DrawFn) -> Any:
    kind = draw(st.sampled_from(KINDS))
    body = draw(st.one_of(json_values, st.sampled_from(["logreg", "fn", "echo"])))
    if kind == "select" and draw(st.booleans()):
        body = {"cases": [{"when": draw(expressions), "branch": {"model": "logreg"}}]}
    step: dict[str, Any] = {"name": draw(st.one_of(st.just("s"), names)), kind: body}
    if draw(st.booleans()):
        step["inputs"] = draw(st.one_of(json_values, st.just(["input.input"])))
    return step


HOSTILE_TEXTS = [
    "[" * 100_000,
    "{a: " * 20_000,
    "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
    + "".join(f"{k}: &{k} [{', '.join([f'*{p}'] * 10)}]\n" for p, k in ["ab", "bc", "cd", "de"]),
    "a:\n" + "".join(" " * i + "b:\n" for i in range(1, 200)),
    "name: x\nsteps: 5\n",
    "name: x\nsteps: [5]\n",
    "name: x\npython: os:system\n",
    "name: x\npython: antigravity:fly\n",
    "name: x\npython: tests.integration.python_plans:np\n",
    "\x00\xff",
    "name: !!python/object/apply:os.system ['true']\n",
    "x" * (300 << 10),
]


@st.composite
def plan_dicts(draw: st.DrawFn) -> Any:
    plan: dict[str, Any] = {"name": draw(st.one_of(st.just("fuzz-plan"), names, json_values))}
    if draw(st.booleans()):
        plan["steps"] = draw(st.one_of(st.lists(steps(), max_size=4), json_values))
    if draw(st.booleans()):
        plan["outputs"] = draw(st.one_of(st.just({"y": "s.y"}), json_values))
    if draw(st.booleans()):
        plan["inputs"] = draw(
            st.one_of(
                st.just([{"name": "input", "dtype": "float32", "shape": [-1, 64]}]), json_values
            )
        )
    if draw(st.integers(min_value=0, max_value=5)) == 0:
        plan["python"] = draw(
            st.sampled_from(
                ["os:system", "tests.integration.python_plans:echo", "fuzz_import_marker:run"]
            )
        )
    return plan


def _dump(data: Any, form: str) -> str:
    if form == "json":
        return json.dumps(data, allow_nan=True)
    return yaml.dump(data, Dumper=getattr(yaml, "CSafeDumper", yaml.SafeDumper))


@st.composite
def proto_plans(draw: st.DrawFn) -> plan_pb2.Plan:
    plan = plan_pb2.Plan(
        name=draw(st.one_of(st.just("fuzz-proto"), names)),
        python=draw(st.sampled_from(["", "", "", "os:system", "x"])),
        description=draw(short_text),
    )
    count = draw(
        st.sampled_from(range(10)).flatmap(
            lambda i: st.just(300) if i == 5 else st.integers(min_value=0, max_value=4)
        )
    )
    for i in range(count):
        step = plan.steps.add(name=draw(st.one_of(st.just(f"s{i}"), names)))
        choice = draw(st.integers(min_value=0, max_value=2))
        if choice == 0:
            step.model.model = draw(st.one_of(st.just("logreg"), names))
        elif choice == 1:
            case = step.select.cases.add(when=draw(expressions))
            case.branch.name = "b"
            case.branch.target.model.model = "logreg"
        step.inputs.update(draw(st.dictionaries(names, names, max_size=2)))
    plan.outputs.update(draw(st.dictionaries(names, names, max_size=2)))
    return plan


@st.composite
def apply_requests(draw: st.DrawFn) -> admin_pb2.ApplyPlanRequest:
    dry_run = draw(st.integers(min_value=0, max_value=9)) > 0
    choice = draw(st.integers(min_value=0, max_value=9))
    if choice < 5:
        text = _dump(draw(plan_dicts()), draw(st.sampled_from(["json", "yaml"])))
        return admin_pb2.ApplyPlanRequest(plan_text=text, dry_run=dry_run)
    if choice < 7:
        return admin_pb2.ApplyPlanRequest(plan=draw(proto_plans()), dry_run=dry_run)
    if choice < 9:
        text = draw(st.sampled_from(HOSTILE_TEXTS))
        return admin_pb2.ApplyPlanRequest(plan_text=text, dry_run=dry_run)
    return admin_pb2.ApplyPlanRequest(plan_text=draw(st.text(max_size=200)), dry_run=True)


# -- sending and watching -----------------------------------------------------------------------


@dataclass
class Tally:
    """Statuses seen and the failures (non-clean codes with their details)."""

    codes: dict[str, int] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    samples: dict[str, list[str]] = field(default_factory=dict)  # code -> a few details
    sent: int = 0

    def add(self, code: grpc.StatusCode, details: str, what: str, budget_ms: int = 0) -> None:
        """Record one status; `budget_ms` is the request's own `timeout_ms` (0: none)."""
        self.sent += 1
        self.codes[code.name] = self.codes.get(code.name, 0) + 1
        sample = self.samples.setdefault(code.name, [])
        if len(sample) < 3:
            sample.append(details[:120])
        # An error message echoing unbounded input overflows the client's metadata limit and
        # arrives as a confusing RESOURCE_EXHAUSTED: a failure too. DEADLINE_EXCEEDED is clean
        # only as the server's answer to a request's own short `timeout_ms` budget, never when
        # the client's deadline ran out (a hang).
        bad = code not in CLEAN or "metadata size exceeds" in details
        if code == grpc.StatusCode.DEADLINE_EXCEEDED:
            bad = not budget_ms or budget_ms >= DEADLINE_S * 1000 or details == "Deadline Exceeded"
        if bad and len(self.failures) < 20:
            self.failures.append(f"{code.name} on {what}: {details[:300]}")


def send_batch(
    call: Callable[..., Any], messages: Sequence[Any], tally: Tally, metadata: Any = None
) -> None:
    """Send `messages` concurrently with `call.future` (one channel); record each status."""
    futures = [call.future(m, timeout=DEADLINE_S, metadata=metadata) for m in messages]
    for message, future in zip(messages, futures, strict=True):
        try:
            future.result()
            tally.add(grpc.StatusCode.OK, "", "")
        except grpc.RpcError as exc:
            what = type(message).__name__ if not isinstance(message, bytes) else "raw bytes"
            tally.add(exc.code(), exc.details() or "", what, getattr(message, "timeout_ms", 0))


@dataclass(frozen=True)
class Usage:
    rss_kib: int
    fds: int


def usage(pid: int) -> Usage:
    """VmRSS and open file descriptors (sockets included) of a process."""
    rss = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1])
    return Usage(rss, len(os.listdir(f"/proc/{pid}/fd")))


# -- typed contracts (meshserve.contracts): raw wire messages around known field numbers -------


_SPECIAL_FLOATS = st.sampled_from([0.0, -0.0, 1e38, -1e38, float("nan"), float("inf"), 3.5])


@st.composite
def typed_fields(draw: st.DrawFn, numbers: Sequence[int]) -> bytes:
    """One wire field: a known field number (or any), any wire type, a hostile payload."""
    number = draw(st.one_of(st.sampled_from(list(numbers)), st.integers(1, (1 << 29) - 1)))
    wire = draw(st.sampled_from([0, 1, 2, 2, 2, 5]))
    tag = varint(number << 3 | wire)
    if wire == 0:
        return tag + varint(draw(st.integers(0, (1 << 64) - 1)))
    if wire == 1:
        return tag + draw(st.binary(min_size=8, max_size=8))
    if wire == 5:
        return tag + draw(st.binary(min_size=4, max_size=4))
    if draw(st.booleans()):  # packed floats: any count, NaN/inf among them
        count = draw(st.sampled_from([0, 1, 63, 64, 65, 128, 640, 6400]))
        value = draw(_SPECIAL_FLOATS)
        payload = np.full(count, value, dtype="<f4").tobytes()
    else:
        payload = draw(st.binary(max_size=300))
    length = len(payload) if draw(st.integers(0, 9)) else draw(st.integers(0, 1 << 20))
    return tag + varint(length) + payload


@st.composite
def typed_messages(draw: st.DrawFn, numbers: Sequence[int]) -> bytes:
    """A typed request as raw bytes: fields around `numbers`, sometimes cut short."""
    body = b"".join(draw(st.lists(typed_fields(numbers), max_size=6)))
    if body and draw(st.integers(0, 9)) == 0:
        body = body[: draw(st.integers(0, len(body) - 1))]
    return body
