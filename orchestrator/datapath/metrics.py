"""Prometheus metrics of the orchestrator -> model data path (process-wide, default registry).

Names, labels and buckets are specs in meshserve/telemetry/catalog.py.
"""

from __future__ import annotations

from meshserve.telemetry import catalog
from meshserve.telemetry.metrics import build

__all__ = [
    "ATTEMPTS",
    "BATCH_ROWS",
    "CALLS",
    "CALL_LATENCY",
    "EJECTIONS",
    "HEDGES",
    "IN_FLIGHT",
    "NO_ENDPOINT",
    "READY_REPLICAS",
    "RETRIES",
    "RETRY_BUDGET",
    "SERVER_BATCH_ROWS",
]

CALLS = build(catalog.DATAPATH_CALLS)
ATTEMPTS = build(catalog.DATAPATH_ATTEMPTS)
RETRIES = build(catalog.DATAPATH_RETRIES)
HEDGES = build(catalog.DATAPATH_HEDGES)
EJECTIONS = build(catalog.DATAPATH_EJECTIONS)
NO_ENDPOINT = build(catalog.DATAPATH_NO_ENDPOINT)
RETRY_BUDGET = build(catalog.DATAPATH_RETRY_BUDGET)
READY_REPLICAS = build(catalog.DATAPATH_READY_REPLICAS)
IN_FLIGHT = build(catalog.DATAPATH_IN_FLIGHT)
CALL_LATENCY = build(catalog.DATAPATH_CALL_LATENCY)
BATCH_ROWS = build(catalog.DATAPATH_BATCH_ROWS)
SERVER_BATCH_ROWS = build(catalog.DATAPATH_SERVER_BATCH_ROWS)
