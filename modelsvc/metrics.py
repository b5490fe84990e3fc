"""Prometheus metrics of a model replica (prefix ``meshserve_modelsvc_``, base units).

Each `ModelMetrics` owns its registry, so several replicas (or tests) in one process don't clash;
`serve(port)` exposes it on /metrics.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

__all__ = ["ModelMetrics"]

_LATENCY_BUCKETS_S = (
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0,
)  # fmt: skip
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class ModelMetrics:
    """Request, batch and queue metrics; implements the batcher's BatchObserver."""

    def __init__(self, model: str, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self._model = model
        self.requests = Counter(
            "meshserve_modelsvc_requests_total",
            "Requests served, by RPC method and gRPC status code",
            ["model", "method", "code"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "meshserve_modelsvc_request_duration_seconds",
            "Request latency inside the server, by RPC method and gRPC status code",
            ["model", "method", "code"],
            buckets=_LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        self.batch_rows = Histogram(
            "meshserve_modelsvc_batch_rows",
            "Rows per session call",
            ["model"],
            buckets=_BATCH_BUCKETS,
            registry=self.registry,
        )
        self.batch_requests = Histogram(
            "meshserve_modelsvc_batch_requests",
            "Requests merged into one session call",
            ["model"],
            buckets=_BATCH_BUCKETS,
            registry=self.registry,
        )
        self.queue_wait_s = Histogram(
            "meshserve_modelsvc_queue_wait_seconds",
            "Time a request waited in the batch queue",
            ["model"],
            buckets=_LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        self.compute_s = Histogram(
            "meshserve_modelsvc_compute_seconds",
            "Duration of one batch (concatenate, handler, session call)",
            ["model"],
            buckets=_LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        self.depth = Gauge(
            "meshserve_modelsvc_queue_depth",
            "Requests waiting in the batch queue",
            ["model"],
            registry=self.registry,
        )

        # Labelled children are looked up once, not per request (labels() takes a lock).
        self._depth = self.depth.labels(model)
        self._batch_rows = self.batch_rows.labels(model)
        self._batch_requests = self.batch_requests.labels(model)
        self._compute_s = self.compute_s.labels(model)
        self._queue_wait_s = self.queue_wait_s.labels(model)
        self._by_code: dict[tuple[str, str], tuple[Counter, Histogram]] = {}

    # BatchObserver
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
