"""Dashboards and the Prometheus config as code: current, well formed, valid for promtool."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
GRAFANA = ROOT / "deploy" / "grafana"
PROMETHEUS = ROOT / "deploy" / "prometheus" / "prometheus.yml"


def test_dashboard_json_is_generated_and_current():
    proc = subprocess.run(
        [sys.executable, str(GRAFANA / "build_dashboard.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr


def test_dashboard_panels_query_meshserve_metrics():
    dashboard = json.loads((GRAFANA / "dashboards" / "meshserve.json").read_text())
    panels = dashboard["panels"]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    titles = " ".join(p["title"] for p in panels).lower()
    for topic in (
        "latency",
        "error",
        "batch",
        "in-flight",
        "retries",
        "ejections",
        "bandit",
        "reward",
        "feedback",
        "shadow",
        "agreement",
        "step",
        "queue",
        "budget",
    ):
        assert topic in titles, topic
    exprs = [t["expr"] for p in panels for t in p.get("targets", ())]
    assert exprs
    for expr in exprs:
        names = set(re.findall(r"\b(meshserve_[a-z_]+)", expr))
        assert names, expr
        assert expr.count("(") == expr.count(")"), expr
        for name in names:
            assert not name.endswith(("_ms", "_us")), name
    provisioning = yaml.safe_load((GRAFANA / "provisioning/dashboards/meshserve.yaml").read_text())
    assert provisioning["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"
    sources = yaml.safe_load((GRAFANA / "provisioning/datasources/prometheus.yaml").read_text())
    uids = {s["uid"] for s in sources["datasources"]}
    assert {t["datasource"]["uid"] for p in panels for t in p.get("targets", ())} <= uids


def test_dashboard_queries_only_catalogued_metrics_and_labels():
    """Every metric a panel reads is in the catalogue the processes build their metrics from,
    and every label it groups or filters by is one that metric (or Prometheus) has."""
    from meshserve.telemetry import catalog

    specs = {}
    for spec in catalog.ALL:
        for suffix in ("", "_bucket", "_sum", "_count") if spec.kind == "histogram" else ("",):
            specs[spec.name + suffix] = spec
    scrape_labels = {catalog.L_INSTANCE, catalog.L_SERVICE, catalog.L_ROLE, "job", "version"}
    dashboard = json.loads((GRAFANA / "dashboards" / "meshserve.json").read_text())
    for panel in dashboard["panels"]:
        for target in panel.get("targets", ()):
            expr = target["expr"]
            for name in re.findall(r"\b(meshserve_[a-z_]+)", expr):
                assert name in specs, f"{panel['title']}: {name} is not in the catalogue"
            used = {
                label.strip()
                for group in re.findall(r"by \(([^)]*)\)", expr)
                for label in group.split(",")
            } | set(re.findall(r"([a-z_]+)=\"", expr))
            known = {label for n in re.findall(r"\b(meshserve_[a-z_]+)", expr)
                     for label in specs[n].labels} | scrape_labels | {"le"}  # fmt: skip
            assert used <= known, f"{panel['title']}: labels {sorted(used - known)} unknown"


def test_prometheus_discovers_targets_through_consul_metrics_port(tmp_path: Path):
    config = yaml.safe_load(PROMETHEUS.read_text())
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "meshserve"]
    assert job["consul_sd_configs"][0]["server"] == "consul:8500"
    relabel = job["relabel_configs"]
    sources = [tuple(r.get("source_labels", ())) for r in relabel]
    assert ("__tmp_host", "__meta_consul_service_metadata_metrics_port") in sources
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (Debian package `prometheus`): YAML checked only")
    # Debian's promtool is built without Consul discovery: check everything else with the
    # Consul block swapped for a static target.
    job["static_configs"] = [{"targets": ["127.0.0.1:9100"]}]
    del job["consul_sd_configs"]
    copy = tmp_path / "prometheus.yml"
    copy.write_text(yaml.safe_dump(config))
    shutil.copy(PROMETHEUS.parent / "rules.yml", tmp_path / "rules.yml")
    proc = subprocess.run([promtool, "check", "config", str(copy)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
