"""Prometheus metrics of the orchestrator -> model data path (process-wide, default registry)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

__all__ = [
    "ATTEMPTS",
    "BATCH_ROWS",
    "CALLS",
    "CALL_LATENCY",
    "EJECTIONS",
    "HEDGES",
    "IN_FLIGHT",
    "NO_ENDPOINT",
    "RETRIES",
    "SERVER_BATCH_ROWS",
]

CALLS = Counter(
    "meshserve_datapath_calls_total", "Model calls made by the orchestrator", ["model", "outcome"]
)
ATTEMPTS = Counter(
    "meshserve_datapath_attempts_total",
    "Attempts sent to model replicas (first tries and retries)",
    ["model"],
)
RETRIES = Counter(
    "meshserve_datapath_retries_total", "Retried attempts by reason", ["model", "reason"]
)
HEDGES = Counter(
    "meshserve_datapath_hedges_total", "Hedged attempts sent to a second replica", ["model"]
)
EJECTIONS = Counter("meshserve_datapath_ejections_total", "Replicas ejected as outliers", ["model"])
NO_ENDPOINT = Counter(
    "meshserve_datapath_no_endpoint_failures_total",
    "Calls failed fast because no replica was ready",
    ["model"],
)
IN_FLIGHT = Gauge(
    "meshserve_datapath_in_flight", "Requests in flight per endpoint", ["model", "endpoint"]
)
CALL_LATENCY = Histogram(
    "meshserve_datapath_call_latency_seconds",
    "Latency of a model call as the caller sees it (batch wait and retries included)",
    ["model"],
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5),
)
BATCH_ROWS = Histogram(
    "meshserve_datapath_batch_rows",
    "Rows per client-side micro-batch sent to a replica",
    ["model"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
)
SERVER_BATCH_ROWS = Histogram(
    "meshserve_datapath_server_batch_rows",
    "Rows of the session call that served a request, as the model reports (stats.batch_size)",
    ["model"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
)
