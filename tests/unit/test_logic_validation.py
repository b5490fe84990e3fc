"""Schema checks on plan inputs: every failure names the field and what was expected."""

from __future__ import annotations

import numpy as np
import pytest

from meshserve.errors import InvalidInputError
from meshserve.orchestrator.logic import LogicContext, run_logic
from meshserve.orchestrator.logic.validation import (
    FieldSpec,
    one_hot,
    spec_from_params,
    validate_inputs,
)

SPECS = [
    FieldSpec("amount", kind="float", shape=(-1,), min_value=0.0, max_value=10_000.0),
    FieldSpec("user_id", kind="string", shape=(-1,)),
    FieldSpec("channel", kind="string", allowed=("web", "pos")),
]


def good() -> dict:
    return {
        "amount": np.array([12.5, 3.0]),
        "user_id": np.array(["u1", "u2"], dtype=object),
        "channel": np.array(["web", "pos"], dtype=object),
    }


def test_valid_inputs_pass():
    validate_inputs(good(), SPECS)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"amount": None}, "missing input 'amount'"),
        (
            {"amount": np.array(["x"], dtype=object)},
            "input 'amount' has dtype object; expected float",
        ),
        ({"amount": np.ones((2, 2))}, "input 'amount' has shape [2, 2]; expected ['*']"),
        ({"amount": np.array([-1.0])}, "input 'amount' has value -1.0 below the minimum 0.0"),
        ({"amount": np.array([np.nan])}, "input 'amount' has a non-finite value at flat index 0"),
        ({"amount": np.array([1e9])}, "above the maximum 10000.0"),
        (
            {"channel": np.array(["fax"], dtype=object)},
            "input 'channel' has value 'fax'; expected one of",
        ),
    ],
)
def test_bad_inputs_are_named(change, message):
    inputs = good()
    for key, value in change.items():
        if value is None:
            del inputs[key]
        else:
            inputs[key] = value
    with pytest.raises(InvalidInputError) as err:
        validate_inputs(inputs, SPECS, where="plan 'fraud'")
    assert message in err.value.message
    assert err.value.message.startswith("plan 'fraud': ")


def test_spec_from_params_rejects_unknown_keys():
    with pytest.raises(InvalidInputError, match="unknown keys \\['maximum'\\]"):
        spec_from_params({"amount": {"kind": "float", "maximum": 3}})


def test_one_hot_and_unknown_category():
    out = one_hot(np.array(["pos", "web"], dtype=object), ["web", "pos"], "channel")
    np.testing.assert_array_equal(out, [[0, 1], [1, 0]])
    with pytest.raises(InvalidInputError, match="'channel' has value 'fax'"):
        one_hot(np.array(["fax"], dtype=object), ["web", "pos"], "channel")


async def test_validate_logic_step_passes_inputs_through():
    params = {"fields": {"amount": {"kind": "float", "min": 0}}}
    ctx = LogicContext(params=params, plan="p", step="check")
    out = await run_logic("validate", {"amount": np.array([1.0])}, ctx)
    assert out["amount"][0] == 1.0
    with pytest.raises(InvalidInputError, match="plan 'p' step 'check': input 'amount'"):
        await run_logic("validate", {"amount": np.array([-1.0])}, ctx)
