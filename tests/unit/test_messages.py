"""`fill`: scalar fields copied by name, overrides for the rest, unknown attributes ignored."""

from __future__ import annotations

from dataclasses import dataclass

from meshserve.messages import fill
from meshserve.v1 import admin_pb2


@dataclass
class View:
    plan: str = "p"
    count: int = 3
    errors: int = 1
    p50_ms: float = 2.5
    p99_ms: float = 9.0
    mean_ms: float = 3.0
    decisions: dict[str, int] | None = None
    not_a_field: str = "ignored"


def test_scalars_are_copied_by_name_and_message_fields_come_from_overrides() -> None:
    view = View(decisions={"s/a": 2})
    latency = fill(admin_pb2.LatencySummary, view)
    assert (latency.count, latency.errors, latency.p99_ms) == (3, 1, 9.0)
    stats = fill(admin_pb2.PlanStats, view, latency=latency, decisions=view.decisions)
    assert (
        stats.plan == "p" and stats.latency.mean_ms == 3.0 and dict(stats.decisions) == {"s/a": 2}
    )


def test_missing_attributes_keep_the_field_default() -> None:
    endpoint = fill(admin_pb2.Endpoint, View())
    assert endpoint.instance_id == "" and endpoint.in_flight == 0
