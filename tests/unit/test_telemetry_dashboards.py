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
        "accuracy",
        "version",
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
    proc = subprocess.run([promtool, "check", "config", str(copy)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
