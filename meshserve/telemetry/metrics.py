"""Prometheus /metrics for every meshserve process.

Every metric's name, labels, help and buckets are specs in ``meshserve/telemetry/catalog.py``
(the one place dashboards and rules read them from too); ``build(spec)`` makes the
prometheus_client object next to the code that measures it (``modelsvc/metrics.py``,
``orchestrator/metrics.py``, ``orchestrator/datapath/metrics.py``); this module also serves them.
Naming (Prometheus conventions): prefix ``meshserve_``, base units in the name (``_seconds``,
``_bytes``), ``_total`` on counters, no unit suffix on ratios/counts of things
(``meshserve_batch_size``); ``check_metric_names`` flags deviations.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterable
from typing import Any
from wsgiref.simple_server import WSGIServer

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    start_http_server,
)
from prometheus_client.metrics_core import Metric

from meshserve.telemetry import catalog
from meshserve.telemetry.catalog import MetricSpec

__all__ = [
    "METRICS_OFF",
    "build",
    "check_metric_names",
    "set_build_info",
    "start_metrics_server",
    "stop_metrics_servers",
]

logger = logging.getLogger(__name__)

METRICS_OFF = -1
_servers: list[tuple[WSGIServer, threading.Thread]] = []
_build_info: Info | None = None


def build(spec: MetricSpec, registry: CollectorRegistry | None = REGISTRY) -> Any:
    """The prometheus_client Counter/Gauge/Histogram `spec` describes, on `registry`."""
    if spec.kind == "counter":
        return Counter(spec.name, spec.help, spec.labels, registry=registry)
    if spec.kind == "gauge":
        return Gauge(spec.name, spec.help, spec.labels, registry=registry)
    return Histogram(spec.name, spec.help, spec.labels, buckets=spec.buckets, registry=registry)


def start_metrics_server(
    port: int, host: str = "127.0.0.1", registry: CollectorRegistry = REGISTRY
) -> int:
    """Serve ``/metrics`` of `registry` on `host`:`port` in a daemon thread; return the bound port.

    `port` 0 picks a free port (the returned one goes into Consul meta ``metrics_port``);
    ``METRICS_OFF`` (-1) serves nothing and returns -1. Raises OSError when the port is taken.
    """
    if port == METRICS_OFF:
        return METRICS_OFF
    if not 0 <= port <= 65535:
        raise ValueError(f"metrics port must be 0..65535 or -1 (off), got {port}")
    server, thread = start_http_server(port, addr=host, registry=registry)
    _servers.append((server, thread))
    bound = int(server.server_port)
    logger.info("metrics on http://%s:%d/metrics", host, bound)
    return bound


def stop_metrics_servers() -> None:
    """Stop every server start_metrics_server started in this process."""
    while _servers:
        server, thread = _servers.pop()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def set_build_info(service: str, version: str, instance_id: str) -> None:
    """Export ``meshserve_build_info{service,version,instance_id,meshserve_version} 1``."""
    global _build_info
    from meshserve import __version__

    if _build_info is None:
        spec = catalog.BUILD_INFO
        _build_info = Info(spec.name.removesuffix("_info"), spec.help)
    service_label, version_label, instance_label, meshserve_label = catalog.BUILD_INFO.labels
    _build_info.info(
        {
            service_label: service,
            version_label: version,
            instance_label: instance_id,
            meshserve_label: __version__,
        }
    )


_UNIT_WORDS = ("milliseconds", "microseconds", "ms", "us", "millis", "kb", "mb")
_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")


def check_metric_names(metrics: Iterable[Metric], prefix: str = "meshserve_") -> list[str]:
    """Problems with metric families by Prometheus conventions (empty list = fine).

    Checks: the prefix, counters ending in ``_total`` (prometheus_client strips it from the
    family name, so a counter family is fine as long as its samples carry it), base units
    (no ms/us/kb), histograms/summaries of durations in ``_seconds``, help text present.
    """
    problems: list[str] = []
    for family in metrics:
        name = family.name
        if not _NAME.match(name):
            problems.append(f"{name}: not a valid metric name")
        if not name.startswith(prefix):
            continue
        parts = name.split("_")
        for word in _UNIT_WORDS:
            if word in parts:
                problems.append(f"{name}: use base units (seconds, bytes), not {word!r}")
        samples = family.samples
        if (
            family.type == "counter"
            and samples
            and not any(s.name.endswith("_total") for s in samples)
        ):
            problems.append(f"{name}: counter samples must end in _total")
        if family.type in ("gauge", "untyped") and name.endswith("_total"):
            problems.append(f"{name}: _total is for counters, this is a {family.type}")
        if (
            family.type in ("histogram", "summary")
            and any(w in parts for w in ("latency", "duration", "time", "wait"))
            and not name.endswith("_seconds")
        ):
            problems.append(f"{name}: a duration {family.type} should end in _seconds")
        if not family.documentation.strip():
            problems.append(f"{name}: missing help text")
    return problems
