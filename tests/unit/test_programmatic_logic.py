"""Logic blocks in Python plans: ``ctx.logic[name].call`` runs like a declarative logic step
(its span in the request's trace, errors naming the step)."""

from __future__ import annotations

import numpy as np
import pytest

from meshserve.errors import InvalidInputError
from meshserve.orchestrator.engine import Engine, ExecuteCall
from meshserve.orchestrator.inprocess import InProcessCaller
from meshserve.v1 import plan_pb2
from tests.logic_helpers import OnePlan
from tests.stores import span_exporter


async def test_python_plan_logic_is_traced_and_validates(models_dir):
    exporter = span_exporter()
    plan = plan_pb2.Plan(name="py-validated", python="examples.programmatic:validated_pipeline")
    engine = Engine(InProcessCaller.from_dir(models_dir), OnePlan(plan))
    x = np.load(models_dir / "digits_test.npz")["X"][:3].astype(np.float32)
    result = await engine.execute(ExecuteCall("py-validated", {"input": x}))
    assert result.outputs["label"].shape == (3,)
    spans = {s.name: s for s in exporter.get_finished_spans()}
    logic = spans["logic validate"]
    assert dict(logic.attributes)["meshserve.step"] == "check"
    assert dict(logic.attributes)["meshserve.plan"] == "py-validated"
    assert len({s.context.trace_id for s in spans.values()}) == 1
    with pytest.raises(InvalidInputError, match="check") as err:
        await engine.execute(ExecuteCall("py-validated", {"input": x * 100}))
    assert "above the maximum" in err.value.message
