"""Writes deploy/grafana/dashboards/meshserve.json: the meshserve dashboard, as code.

    .venv/bin/python deploy/grafana/build_dashboard.py          # rewrite the JSON
    .venv/bin/python deploy/grafana/build_dashboard.py --check  # fail if it is stale

Every query uses metric names the processes export (prefix ``meshserve_``); the unit test
tests/unit/test_telemetry_dashboards.py checks the JSON is current and well formed.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parent / "dashboards" / "meshserve.json"
DS = {"type": "prometheus", "uid": "meshserve-prometheus"}

# (row title, [(panel title, unit, [(expr, legend)], kind)])
ROWS: list[tuple[str, list[tuple[str, str, list[tuple[str, str]], str]]]] = [
    (
        "Traffic and errors",
        [
            (
                "Plan requests /s",
                "reqps",
                [
                    (
                        "sum by (plan) "
                        "(rate(meshserve_orchestrator_requests_total[$__rate_interval]))",
                        "{{plan}}",
                    )
                ],
                "timeseries",
            ),
            (
                "Plan error ratio",
                "percentunit",
                [
                    (
                        'sum by (plan) (rate(meshserve_orchestrator_requests_total{code!="OK"}'
                        "[$__rate_interval])) / sum by (plan) "
                        "(rate(meshserve_orchestrator_requests_total[$__rate_interval]))",
                        "{{plan}}",
                    )
                ],
                "timeseries",
            ),
            (
                "Model requests /s by status",
                "reqps",
                [
                    (
                        "sum by (model, code) "
                        "(rate(meshserve_modelsvc_requests_total[$__rate_interval]))",
                        "{{model}} {{code}}",
                    )
                ],
                "timeseries",
            ),
            (
                "Model calls by outcome (orchestrator side)",
                "reqps",
                [
                    (
                        "sum by (model, outcome) "
                        "(rate(meshserve_datapath_calls_total[$__rate_interval]))",
                        "{{model}} {{outcome}}",
                    )
                ],
                "timeseries",
            ),
        ],
    ),
    (
        "Latency",
        [
            (
                "Plan latency p50 / p99",
                "s",
                [
                    (
                        f"histogram_quantile({q}, sum by (plan, le) (rate("
                        "meshserve_orchestrator_request_duration_seconds_bucket[$__rate_interval])))",
                        f"{{{{plan}}}} p{int(q * 100)}",
                    )
                    for q in (0.5, 0.99)
                ],
                "timeseries",
            ),
            (
                "Model call latency p50 / p99 (as the orchestrator sees it)",
                "s",
                [
                    (
                        f"histogram_quantile({q}, sum by (model, le) (rate("
                        "meshserve_datapath_call_latency_seconds_bucket[$__rate_interval])))",
                        f"{{{{model}}}} p{int(q * 100)}",
                    )
                    for q in (0.5, 0.99)
                ],
                "timeseries",
            ),
            (
                "Model server latency p99, queue wait p99, compute p99",
                "s",
                [
                    (
                        "histogram_quantile(0.99, sum by (model, le) (rate("
                        f"meshserve_modelsvc_{metric}_bucket[$__rate_interval])))",
                        f"{{{{model}}}} {label}",
                    )
                    for metric, label in (
                        ("request_duration_seconds", "request"),
                        ("queue_wait_seconds", "queue wait"),
                        ("compute_seconds", "compute"),
                    )
                ],
                "timeseries",
            ),
        ],
    ),
    (
        "Batching",
        [
            (
                "Mean rows per session call (server batching)",
                "short",
                [
                    (
                        "sum by (model) (rate(meshserve_modelsvc_batch_rows_sum[$__rate_interval]))"
                        " / sum by (model) "
                        "(rate(meshserve_modelsvc_batch_rows_count[$__rate_interval]))",
                        "{{model}}",
                    )
                ],
                "timeseries",
            ),
            (
                "Mean rows per micro-batch (orchestrator streaming batcher)",
                "short",
                [
                    (
                        "sum by (model) (rate(meshserve_datapath_batch_rows_sum[$__rate_interval]))"
                        " / sum by (model) "
                        "(rate(meshserve_datapath_batch_rows_count[$__rate_interval]))",
                        "{{model}}",
                    )
                ],
                "timeseries",
            ),
            (
                "Batch queue depth",
                "short",
                [("sum by (model, instance) (meshserve_modelsvc_queue_depth)", "{{instance}}")],
                "timeseries",
            ),
        ],
    ),
    (
        "Replicas and resilience",
        [
            (
                "In-flight requests per replica",
                "short",
                [
                    (
                        "sum by (model, endpoint) (meshserve_datapath_in_flight)",
                        "{{model}} {{endpoint}}",
                    )
                ],
                "timeseries",
            ),
            (
                "Requests per replica /s",
                "reqps",
                [
                    (
                        "sum by (model, instance) "
                        "(rate(meshserve_modelsvc_requests_total[$__rate_interval]))",
                        "{{instance}}",
                    )
                ],
                "timeseries",
            ),
            (
                "Retries /s by reason",
                "reqps",
                [
                    (
                        "sum by (model, reason) "
                        "(rate(meshserve_datapath_retries_total[$__rate_interval]))",
                        "{{model}} {{reason}}",
                    )
                ],
                "timeseries",
            ),
            (
                "Ejections and no-endpoint failures (5m)",
                "short",
                [
                    (
                        "sum by (model) (increase(meshserve_datapath_ejections_total[5m]))",
                        "{{model}} ejections",
                    ),
                    (
                        "sum by (model) "
                        "(increase(meshserve_datapath_no_endpoint_failures_total[5m]))",
                        "{{model}} no endpoint",
                    ),
                ],
                "timeseries",
            ),
        ],
    ),
    (
        "Decisions and online learning",
        [
            (
                "Bandit / select / split choices /s",
                "reqps",
                [
                    (
                        "sum by (plan, step, branch) "
                        "(rate(meshserve_orchestrator_decisions_total[$__rate_interval]))",
                        "{{plan}}/{{step}} -> {{branch}}",
                    )
                ],
                "timeseries",
            ),
            (
                "Learner deployed version",
                "none",
                [("max by (learner) (meshserve_learner_deployed_version)", "{{learner}}")],
                "stat",
            ),
            (
                "Learner holdout accuracy",
                "percentunit",
                [("max by (learner) (meshserve_learner_holdout_accuracy)", "{{learner}}")],
                "timeseries",
            ),
            (
                "Feedback updates /s",
                "ops",
                [
                    (
                        "sum by (learner) "
                        "(rate(meshserve_learner_updates_total[$__rate_interval]))",
                        "{{learner}}",
                    )
                ],
                "timeseries",
            ),
        ],
    ),
]


def _panel(
    panel_id: int, title: str, unit: str, targets: list[tuple[str, str]], kind: str, x: int, y: int
) -> dict[str, Any]:
    return {
        "id": panel_id,
        "type": kind,
        "title": title,
        "datasource": DS,
        "gridPos": {"h": 8, "w": 12 if kind == "timeseries" else 6, "x": x, "y": y},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom"}}
        if kind == "timeseries"
        else {"reduceOptions": {"calcs": ["lastNotNull"]}},
        "targets": [
            {"refId": chr(ord("A") + i), "datasource": DS, "expr": expr, "legendFormat": legend}
            for i, (expr, legend) in enumerate(targets)
        ],
    }


def build() -> dict[str, Any]:
    panels: list[dict[str, Any]] = []
    panel_id = 1
    y = 0
    for row_title, row_panels in ROWS:
        panels.append(
            {
                "id": panel_id,
                "type": "row",
                "title": row_title,
                "collapsed": False,
                "gridPos": {"h": 1, "w": 24, "x": 0, "y": y},
                "panels": [],
            }
        )
        panel_id += 1
        y += 1
        x = 0
        for title, unit, targets, kind in row_panels:
            width = 12 if kind == "timeseries" else 6
            if x + width > 24:
                x = 0
                y += 8
            panels.append(_panel(panel_id, title, unit, targets, kind, x, y))
            panel_id += 1
            x += width
        y += 8
    return {
        "uid": "meshserve-overview",
        "title": "meshserve",
        "tags": ["meshserve"],
        "timezone": "browser",
        "schemaVersion": 39,
        "version": 1,
        "refresh": "10s",
        "time": {"from": "now-30m", "to": "now"},
        "templating": {"list": []},
        "annotations": {"list": []},
        "links": [
            {
                "title": "Traces (Jaeger)",
                "type": "link",
                "url": "http://localhost:16686/search",
                "targetBlank": True,
            }
        ],
        "panels": panels,
    }


def render() -> str:
    return json.dumps(build(), indent=2, sort_keys=True) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail when the JSON is stale")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        if not OUT.exists() or OUT.read_text() != text:
            print(f"{OUT} is stale: run {Path(__file__).name}", file=sys.stderr)
            return 1
        return 0
    OUT.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
