"""start_metrics_server serves a registry on a free port; metric-name conventions are checked."""

from __future__ import annotations

import urllib.request

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.parser import text_string_to_metric_families

from meshserve.telemetry import METRICS_OFF, check_metric_names, start_metrics_server
from meshserve.telemetry.metrics import stop_metrics_servers


def test_serves_registry_on_a_free_port_and_off_means_off():
    registry = CollectorRegistry()
    Counter("meshserve_test_requests_total", "Requests.", ["model"], registry=registry).labels(
        "digits"
    ).inc(3)
    port = start_metrics_server(0, registry=registry)
    try:
        assert port > 0
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            text = resp.read().decode()
        samples = {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text)
            for s in fam.samples
        }
        assert samples[("meshserve_test_requests_total", (("model", "digits"),))] == 3.0
    finally:
        stop_metrics_servers()
    assert start_metrics_server(METRICS_OFF) == METRICS_OFF
    with pytest.raises(ValueError, match=r"0\.\.65535 or -1"):
        start_metrics_server(70000)


def test_check_metric_names_flags_convention_breaks():
    registry = CollectorRegistry()
    Counter("meshserve_ok_requests", "Requests.", registry=registry)
    Histogram("meshserve_ok_request_duration_seconds", "Latency.", registry=registry)
    Gauge("meshserve_ok_in_flight_requests", "In flight.", registry=registry)
    Histogram("meshserve_bad_latency_ms", "Latency in ms.", registry=registry)
    Gauge("meshserve_bad_errors_total", "A gauge named like a counter.", registry=registry)
    Gauge("other_app_metric_ms", "Not ours.", registry=registry)
    problems = check_metric_names(registry.collect())
    assert all(not p.startswith("meshserve_ok") for p in problems), problems
    assert any(p.startswith("meshserve_bad_latency_ms: use base units") for p in problems)
    assert any("meshserve_bad_latency_ms: a duration histogram" in p for p in problems)
    assert any(p.startswith("meshserve_bad_errors_total: _total is for counters") for p in problems)
    assert not any(p.startswith("other_app") for p in problems)


def test_every_catalogued_metric_builds_and_follows_the_conventions():
    """The catalogue the processes, dashboard and rules share: unique names, valid specs."""
    from meshserve.telemetry import catalog
    from meshserve.telemetry.metrics import build

    names = [spec.name for spec in catalog.ALL]
    assert len(names) == len(set(names)), names
    registry = CollectorRegistry()
    for spec in catalog.ALL:
        if spec is catalog.BUILD_INFO:
            continue  # an Info, built by set_build_info
        metric = build(spec, registry)
        child = metric.labels(*("x" for _ in spec.labels)) if spec.labels else metric
        (child.inc if spec.kind == "counter" else child.set if spec.kind == "gauge" else
         child.observe)(1)  # fmt: skip
        assert set(spec.labels) <= {v for k, v in vars(catalog).items() if k.startswith("L_")}, (
            spec.name
        )
    assert not check_metric_names(registry.collect())
    with pytest.raises(ValueError, match="only histograms"):
        catalog.PLAN_REQUESTS.series("_bucket")
