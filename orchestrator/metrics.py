"""Prometheus metrics of plan execution (process-wide, default registry; base units)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

__all__ = [
    "AUTH_REFUSED",
    "PLAN_DECISIONS",
    "PLAN_LATENCY",
    "PLAN_REQUESTS",
    "SHADOW_AGREED_ROWS",
    "SHADOW_CANDIDATE_ERRORS",
    "SHADOW_COMPARED_ROWS",
]

PLAN_REQUESTS = Counter(
    "meshserve_plan_requests_total", "Plan executions by outcome", ["plan", "outcome"]
)
PLAN_LATENCY = Histogram(
    "meshserve_plan_latency_seconds",
    "End-to-end plan execution time in the orchestrator",
    ["plan"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0),
)
PLAN_DECISIONS = Counter(
    "meshserve_plan_decisions_total",
    "Branches chosen by select/split/bandit steps",
    ["plan", "step", "branch"],
)
SHADOW_COMPARED_ROWS = Counter(
    "meshserve_shadow_compared_rows_total", "Rows compared between primary and candidate",
    ["plan", "step"],
)  # fmt: skip
SHADOW_AGREED_ROWS = Counter(
    "meshserve_shadow_agreed_rows_total", "Rows where the candidate agreed with the primary",
    ["plan", "step"],
)  # fmt: skip
SHADOW_CANDIDATE_ERRORS = Counter(
    "meshserve_shadow_candidate_errors_total", "Failed shadow candidate runs", ["plan", "step"]
)
AUTH_REFUSED = Counter(
    "meshserve_auth_refused_total",
    "Calls refused by authentication (UNAUTHENTICATED) or by a token's plan scope "
    "(PERMISSION_DENIED); surface grpc|http, service admin|data",
    ["surface", "service", "code"],
)
