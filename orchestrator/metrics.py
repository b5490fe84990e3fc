"""Prometheus metrics of plan execution (process-wide, default registry; base units).

Names, labels and buckets are specs in meshserve/telemetry/catalog.py.
"""

from __future__ import annotations

from meshserve.telemetry import catalog
from meshserve.telemetry.metrics import build

__all__ = [
    "AUTH_REFUSED",
    "PLAN_DECISIONS",
    "PLAN_LATENCY",
    "PLAN_REQUESTS",
    "SHADOW_AGREED_ROWS",
    "SHADOW_CANDIDATE_ERRORS",
    "SHADOW_COMPARED_ROWS",
    "SHADOW_LATENCY",
    "STEP_LATENCY",
]

PLAN_REQUESTS = build(catalog.PLAN_REQUESTS)
PLAN_LATENCY = build(catalog.PLAN_LATENCY)
STEP_LATENCY = build(catalog.STEP_LATENCY)
PLAN_DECISIONS = build(catalog.PLAN_DECISIONS)
SHADOW_COMPARED_ROWS = build(catalog.SHADOW_COMPARED_ROWS)
SHADOW_AGREED_ROWS = build(catalog.SHADOW_AGREED_ROWS)
SHADOW_CANDIDATE_ERRORS = build(catalog.SHADOW_CANDIDATE_ERRORS)
SHADOW_LATENCY = build(catalog.SHADOW_LATENCY)
AUTH_REFUSED = build(catalog.AUTH_REFUSED)
