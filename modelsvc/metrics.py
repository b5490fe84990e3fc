"""Prometheus metrics of a model replica (prefix ``meshserve_modelsvc_``, base units; names,
labels and buckets are specs in meshserve/telemetry/catalog.py).

Each `ModelMetrics` owns its registry, so several replicas (or tests) in one process don't clash;
`serve(port)` exposes it on /metrics.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server

from meshserve.telemetry import catalog
from meshserve.telemetry.metrics import build

__all__ = ["ModelMetrics"]


class ModelMetrics:
    """Request, batch and queue metrics; implements the batcher's BatchObserver."""

    def __init__(self, model: str, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self._model = model
        self.requests = build(catalog.MODEL_REQUESTS, self.registry)
        self.latency = build(catalog.MODEL_LATENCY, self.registry)
        self.batch_rows = build(catalog.MODEL_BATCH_ROWS, self.registry)
        self.batch_requests = build(catalog.MODEL_BATCH_REQUESTS, self.registry)
        self.queue_wait_s = build(catalog.MODEL_QUEUE_WAIT, self.registry)
        self.compute_s = build(catalog.MODEL_COMPUTE, self.registry)
        self.depth = build(catalog.MODEL_QUEUE_DEPTH, self.registry)
        self.capacity = build(catalog.MODEL_QUEUE_CAPACITY, self.registry)

        # Labelled children are looked up once, not per request (labels() takes a lock).
        self._depth = self.depth.labels(model)
        self._batch_rows = self.batch_rows.labels(model)
        self._batch_requests = self.batch_requests.labels(model)
        self._compute_s = self.compute_s.labels(model)
        self._queue_wait_s = self.queue_wait_s.labels(model)
        self._by_code: dict[tuple[str, str], tuple[Counter, Histogram]] = {}

    # BatchObserver
    def queue_capacity(self, capacity: int) -> None:
        """The batch queue's bound (set once; queue saturation = depth / capacity)."""
        self.capacity.labels(self._model).set(capacity)

    def queue_depth(self, depth: int) -> None:
        self._depth.set(depth)

    def batch_done(self, rows: int, requests: int, compute_s: float) -> None:
        self._batch_rows.observe(rows)
        self._batch_requests.observe(requests)
        self._compute_s.observe(compute_s)

    def queue_wait(self, wait_s: float) -> None:
        self._queue_wait_s.observe(wait_s)

    def request_done(self, method: str, code: str, duration_s: float) -> None:
        children = self._by_code.get((method, code))
        if children is None:
            children = (
                self.requests.labels(self._model, method, code),
                self.latency.labels(self._model, method, code),
            )
            self._by_code[(method, code)] = children
        children[0].inc()
        children[1].observe(duration_s)

    def serve(self, host: str, port: int) -> int:
        """Serve /metrics on `port` (0 = free port); returns the bound port."""
        server, _thread = start_http_server(port, addr=host, registry=self.registry)
        return int(server.server_address[1])
