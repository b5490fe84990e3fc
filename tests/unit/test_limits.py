"""Limits are data: every bound names itself, is checked before work and never costs more than
it weighs (no RecursionError, no allocation bombs, no alias expansion)."""

from __future__ import annotations

import logging
import sys
import time

import grpc
import numpy as np
import pytest

from meshserve.decoding import tolerant
from meshserve.errors import InvalidInputError
from meshserve.grpc_errors import STATUS_MESSAGE_MAX_CHARS, map_errors, status_from_exception
from meshserve.limits import (
    LimitExceededError,
    Limits,
    check_nesting,
    check_shape,
    check_string,
)
from meshserve.logs import LogLimiter, rate_limited
from meshserve.orchestrator.compiled import load_python_target
from meshserve.orchestrator.converters import call_from_proto
from meshserve.orchestrator.expr import compile_expression
from meshserve.orchestrator.plans.parse import parse_plan_text, plan_from_dict
from meshserve.orchestrator.plans.validate import check_plan_limits
from meshserve.v1 import model_pb2, model_pb2_grpc, orchestrator_pb2, plan_pb2, tensor_pb2

LIMITS = Limits()
BOMB = (
    'a: &a ["x","x","x","x","x","x","x","x","x","x"]\n'
    "b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a,*a]\n"
    "c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b,*b]\n"
    "d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c,*c]\n"
    "e: [*d,*d,*d,*d,*d,*d,*d,*d,*d,*d]\n"
)


def test_limits_must_be_positive() -> None:
    with pytest.raises(InvalidInputError, match="max_dims must be > 0"):
        Limits(max_dims=0)


@pytest.mark.parametrize(
    ("shape", "error", "fragment"),
    [
        ([1] * 33, InvalidInputError, "max_dims=32"),
        ([2, -1], InvalidInputError, "negative dimension"),
        ([1 << 14, 1 << 14], LimitExceededError, "max_elements=67108864"),
        ([0, 1 << 40, 1 << 40], LimitExceededError, "max_elements"),  # numpy would refuse it
    ],
)
def test_shapes_checked_before_allocation(shape, error, fragment) -> None:
    with pytest.raises(error, match=fragment):
        check_shape("x", shape, LIMITS)


def test_limit_errors_quote_a_bounded_prefix_and_are_resource_exhausted() -> None:
    with pytest.raises(LimitExceededError) as info:
        check_string("input name", "n" * 65536, LIMITS, "max_name_chars")
    assert info.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert info.value.retry_pushback_ms is None
    assert "max_name_chars=128" in info.value.message
    assert "(65536 characters)" in info.value.message
    assert len(info.value.message) < 300


def test_nesting_is_walked_without_recursion() -> None:
    deep: list[object] = []
    for _ in range(100_000):
        deep = [deep]
    with pytest.raises(InvalidInputError, match="max_nesting_depth=32"):
        check_nesting("params", {"a": deep}, LIMITS)


def test_execute_request_strings_and_counts_bounded() -> None:
    request = orchestrator_pb2.ExecuteRequest(plan="p", routing_key="k" * 5000)
    with pytest.raises(LimitExceededError, match="routing_key"):
        call_from_proto(request, None)
    request = orchestrator_pb2.ExecuteRequest(plan="p")
    for i in range(LIMITS.max_inputs + 1):
        request.inputs[f"i{i}"].CopyFrom(tensor_pb2.Tensor(dtype=1, shape=[1], data=b"\0" * 4))
    with pytest.raises(LimitExceededError, match="max_inputs=64"):
        call_from_proto(request, None)
    request = orchestrator_pb2.ExecuteRequest(plan="p")
    request.inputs["x"].CopyFrom(tensor_pb2.Tensor(dtype=1, shape=[1] * 70))
    with pytest.raises(InvalidInputError, match="max_dims"):
        call_from_proto(request, None)


# -- plans ------------------------------------------------------------------------------------


def test_yaml_alias_bomb_refused_before_expansion() -> None:
    started = time.monotonic()
    with pytest.raises(InvalidInputError, match="anchors and aliases"):
        parse_plan_text(BOMB)
    assert time.monotonic() - started < 1.0


@pytest.mark.parametrize(
    ("text", "error", "fragment"),
    [
        ("[" * 5000 + "]" * 5000, InvalidInputError, "nesting|valid YAML"),
        ("a:\n" + "".join(" " * (2 * i) + "b:\n" for i in range(1, 200)), InvalidInputError,
         "max_nesting_depth"),
        ("name: x\nsteps: 5", InvalidInputError, "'steps' must be a list"),
        ("name: x\ninputs: {a: 1}", InvalidInputError, "'inputs' must be a list"),
        ("name: x\nsteps: [5]", InvalidInputError, "steps\\[0\\] must be a mapping"),
        ("name: x\nsteps: [{name: s, select: {cases: 5}}]", InvalidInputError, "step 's'"),
        ("name: x\nsteps: [{name: s, bandit: {arms: 5}}]", InvalidInputError, "step 's'"),
        ("name: [1, 2]", InvalidInputError, "Plan schema"),
        ("name: 2020-01-01", InvalidInputError, "Plan schema"),
        ("x" * (LIMITS.max_plan_bytes + 1), LimitExceededError, "max_plan_bytes"),
        (
            "name: x\nsteps:\n" + "- {name: s, model: m}\n" * 300,
            LimitExceededError,
            "max_plan_steps=256",
        ),
        ("[" + "1," * 20_001 + "]", LimitExceededError, "max_yaml_nodes"),
    ],
)  # fmt: skip
def test_hostile_plan_text_is_refused_by_name(text, error, fragment) -> None:
    with pytest.raises(error, match=fragment):
        parse_plan_text(text)


def test_proto_plans_are_bounded_too() -> None:
    plan = plan_pb2.Plan(name="p")
    for i in range(300):
        plan.steps.add(name=f"s{i}").model.model = "m"
    with pytest.raises(LimitExceededError, match="max_plan_steps"):
        check_plan_limits(plan, LIMITS)
    plan = plan_pb2.Plan(name="p", description="d" * (LIMITS.max_plan_bytes + 1))
    with pytest.raises(LimitExceededError, match="max_plan_bytes"):
        check_plan_limits(plan, LIMITS)


# -- select expressions -----------------------------------------------------------------------

NAMES = frozenset({"attributes", "inputs"})
BINDINGS = {"attributes": {"tier": "gold"}, "inputs": {"x": np.ones(10_000, np.float32)}}


@pytest.mark.parametrize(
    ("source", "error", "fragment"),
    [
        ("-" * 990 + "1", InvalidInputError, "max_expression_depth"),
        ("not " * 240 + "True", InvalidInputError, "max_expression_depth"),
        ("x" * 1001, LimitExceededError, "max_expression_chars"),
        ("'x' * 100000000 == ''", LimitExceededError, "max_eval_items"),
        ("[0] * 10000000 == []", LimitExceededError, "max_eval_items"),
        ("len('%999999999d' % 1) > 0", InvalidInputError, "'%' on a string"),
        ("(inputs['x'][:, None] * inputs['x']).shape", LimitExceededError, "max_eval_items"),
        ("9999999999999999 * 9999999999999999 * 9999999999999999 * 9999999999999999 * "
         "9999999999999999 * 9999999999999999 * 9999999999999999 * 9999999999999999 * "
         "9999999999999999 * 9999999999999999 * 9999999999999999 > 0",
         LimitExceededError, "max_eval_int_bits"),
        ("1" * 100 + " > 0", LimitExceededError, "max_eval_int_bits"),
    ],
)  # fmt: skip
def test_expressions_cannot_recurse_or_allocate(source, error, fragment) -> None:
    with pytest.raises(error, match=fragment):
        compile_expression(source, NAMES).truth(BINDINGS)


def test_expression_evaluation_steps_are_bounded() -> None:
    expr = compile_expression("1 + 1 + 1 + 1 + 1 > 0", NAMES, Limits(max_eval_steps=5))
    with pytest.raises(LimitExceededError, match="max_eval_steps=5"):
        expr.truth(BINDINGS)
    assert compile_expression("attributes['tier'] == 'gold'", NAMES).truth(BINDINGS)
    assert compile_expression("inputs['x'].shape[0] == 10000", NAMES).truth(BINDINGS)


# -- python plan targets ----------------------------------------------------------------------


def test_python_targets_only_from_the_allow_list(tmp_path, monkeypatch) -> None:
    marker = tmp_path / "imported"
    (tmp_path / "side_effect_mod.py").write_text(
        f"open({str(marker)!r}, 'w').write('ran')\ndef target(inputs, ctx):\n    return inputs\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    allowed = frozenset({"tests.integration.python_plans"})
    with pytest.raises(InvalidInputError, match="not in the allow-list") as info:
        load_python_target("side_effect_mod:target", allowed)
    assert "tests.integration.python_plans" in info.value.message
    assert not marker.exists() and "side_effect_mod" not in sys.modules
    assert callable(load_python_target("tests.integration.python_plans:echo", allowed))


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ("tests.integration.python_plans:np", "is a module"),
        ("tests.integration.python_plans:_private", "no public"),
        ("tests.integration.python_plans:Any", "not defined in"),
    ],
)
def test_python_targets_are_callables_defined_in_the_module(spec, fragment) -> None:
    with pytest.raises(InvalidInputError, match=fragment):
        load_python_target(spec, frozenset({"tests.integration.python_plans"}))


# -- logs and undecodable bodies --------------------------------------------------------------


def test_repeated_bad_input_logs_one_line_per_interval(caplog) -> None:
    now = [0.0]
    limiter = LogLimiter(interval_s=10.0, clock=lambda: now[0])
    logger = logging.getLogger("meshserve.test.limits")
    with caplog.at_level(logging.WARNING, logger=logger.name):
        written = [rate_limited(logger, "bad", "bad %s", i, limiter=limiter) for i in range(100)]
        now[0] = 10.0
        rate_limited(logger, "bad", "bad %s", "again", limiter=limiter)
    assert sum(written) == 1
    assert [r.getMessage() for r in caplog.records] == [
        "bad 0",
        "bad again (99 similar suppressed)",
    ]


class _Echo(model_pb2_grpc.ModelServiceServicer):
    @map_errors
    async def Infer(self, request, context):
        return model_pb2.InferResponse(id=request.id)


async def test_undecodable_bodies_are_invalid_argument() -> None:
    server = grpc.aio.server()
    model_pb2_grpc.add_ModelServiceServicer_to_server(_Echo(), tolerant(server))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            raw = channel.unary_unary("/meshserve.v1.ModelService/Infer")
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await raw(b"\xff\xff\xff\xff", timeout=5)
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "meshserve.v1.InferRequest" in (info.value.details() or "")
            good = model_pb2.InferRequest(id="ok").SerializeToString()
            assert model_pb2.InferResponse.FromString(await raw(good, timeout=5)).id == "ok"
    finally:
        await server.stop(0)


def test_long_names_in_a_plan_are_refused_before_they_are_echoed() -> None:
    long = "n" * 65_000
    plan = plan_pb2.Plan(name="p")
    plan.steps.add(name=long).model.model = "m"
    plan.outputs["y"] = "s.y"
    with pytest.raises(LimitExceededError, match="step name") as info:
        check_plan_limits(plan, LIMITS)
    assert len(info.value.message) < 300
    plan = plan_pb2.Plan(name="p")
    plan.outputs["y"] = long
    with pytest.raises(LimitExceededError, match="plan output wire"):
        check_plan_limits(plan, LIMITS)
    with pytest.raises(LimitExceededError, match="kind"):
        plan_from_dict({"name": "p", "steps": [{"name": "s", long: 1}]})


def test_status_messages_are_bounded_whatever_the_error_says() -> None:
    code, message, _ = status_from_exception(InvalidInputError("x" * 100_000))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert len(message) <= STATUS_MESSAGE_MAX_CHARS + 40
    assert message.endswith("(100000 characters)")
