"""Writes deploy/grafana/dashboards/meshserve.json: the meshserve dashboard, as code.

    .venv/bin/python deploy/grafana/build_dashboard.py          # rewrite the JSON
    .venv/bin/python deploy/grafana/build_dashboard.py --check  # fail if it is stale

Every query is built from the metric specs in meshserve/telemetry/catalog.py, the same specs
the processes build their metrics from, so names and labels cannot drift. The unit test
tests/unit/test_telemetry_dashboards.py checks the JSON is current and well formed;
tests/integration/test_prometheus_dashboard.py evaluates every query on a real Prometheus
scraping a real mesh and asserts each returns data.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run as a script from anywhere

from meshserve.telemetry import catalog as c
from meshserve.telemetry import promql
from meshserve.telemetry.catalog import MetricSpec
from meshserve.telemetry.generated import write_or_check

OUT = Path(__file__).resolve().parent / "dashboards" / "meshserve.json"
DS = {"type": "prometheus", "uid": "meshserve-prometheus"}
RATE = "$__rate_interval"

Target = tuple[str, str]  # (PromQL, legend)
Panel = tuple[str, str, list[Target], str]  # (title, unit, targets, kind)


def _rate(spec: MetricSpec, by: tuple[str, ...], match: str = "", suffix: str = "") -> str:
    return promql.rate(spec, by, RATE, match, suffix)


def _quantile(q: float, spec: MetricSpec, by: tuple[str, ...], match: str = "") -> str:
    return promql.quantile(q, spec, by, RATE, match)


def _mean(spec: MetricSpec, by: tuple[str, ...]) -> str:
    return promql.mean(spec, by, RATE)


def _legend(*labels: str, extra: str = "") -> str:
    return " ".join(f"{{{{{label}}}}}" for label in labels) + extra


def _p50_p99(spec: MetricSpec, by: tuple[str, ...]) -> list[Target]:
    return [(_quantile(q, spec, by), _legend(*by, extra=f" p{int(q * 100)}")) for q in (0.5, 0.99)]


_ERR = promql.selector(**{c.L_OUTCOME: "error"})
_SHADOW = (c.L_PLAN, c.L_STEP, c.L_CANDIDATE)


def _shadow_latency_delta(q: float) -> Target:
    """Candidate minus primary latency at quantile `q`, per shadow step and candidate."""
    candidate, primary = (
        _quantile(q, c.SHADOW_LATENCY, _SHADOW, promql.selector(**{c.L_BRANCH: branch}))
        for branch in ("candidate", "primary")
    )
    return f"{candidate} - {primary}", _legend(*_SHADOW, extra=f" p{int(q * 100)}")


ROWS: list[tuple[str, list[Panel]]] = [
    (
        "Plans",
        [
            ("Plan requests /s", "reqps",
             [(_rate(c.PLAN_REQUESTS, (c.L_PLAN,)), _legend(c.L_PLAN))], "timeseries"),
            ("Plan error ratio", "percentunit",
             [(promql.ratio(_rate(c.PLAN_REQUESTS, (c.L_PLAN,), _ERR),
                      _rate(c.PLAN_REQUESTS, (c.L_PLAN,))), _legend(c.L_PLAN))], "timeseries"),
            ("Plan latency p50 / p99", "s", _p50_p99(c.PLAN_LATENCY, (c.L_PLAN,)), "timeseries"),
        ],
    ),
    (
        "Steps",
        [
            ("Step latency p99", "s",
             [(_quantile(0.99, c.STEP_LATENCY, (c.L_PLAN, c.L_STEP)),
               _legend(c.L_PLAN, c.L_STEP))], "timeseries"),
            ("Step errors /s", "reqps",
             [(_rate(c.STEP_LATENCY, (c.L_PLAN, c.L_STEP), _ERR, "_count"),
               _legend(c.L_PLAN, c.L_STEP))], "timeseries"),
        ],
    ),
    (
        "Models and replicas",
        [
            ("Model requests /s by status", "reqps",
             [(_rate(c.MODEL_REQUESTS, (c.L_MODEL, c.L_CODE)), _legend(c.L_MODEL, c.L_CODE))],
             "timeseries"),
            ("Requests per replica /s", "reqps",
             [(_rate(c.MODEL_REQUESTS, (c.L_MODEL, c.L_INSTANCE)), _legend(c.L_INSTANCE))],
             "timeseries"),
            ("Model server latency p99: request, queue wait, compute", "s",
             [(_quantile(0.99, spec, (c.L_MODEL,)), _legend(c.L_MODEL, extra=f" {what}"))
              for spec, what in ((c.MODEL_LATENCY, "request"), (c.MODEL_QUEUE_WAIT, "queue wait"),
                                 (c.MODEL_COMPUTE, "compute"))], "timeseries"),
            ("Mean rows per session call (server batching)", "short",
             [(_mean(c.MODEL_BATCH_ROWS, (c.L_MODEL,)), _legend(c.L_MODEL))], "timeseries"),
            ("Batch queue saturation (depth / capacity)", "percentunit",
             [(promql.ratio(f"max by ({c.L_MODEL}, {c.L_INSTANCE}) ({c.MODEL_QUEUE_DEPTH.name})",
                      f"max by ({c.L_MODEL}, {c.L_INSTANCE}) ({c.MODEL_QUEUE_CAPACITY.name})"),
               _legend(c.L_INSTANCE))], "timeseries"),
            ("Ready replicas (as the orchestrator sees them)", "short",
             [(f"min by ({c.L_MODEL}) ({c.DATAPATH_READY_REPLICAS.name})", _legend(c.L_MODEL))],
             "timeseries"),
        ],
    ),
    (
        "Data path",
        [
            ("Model calls by outcome (orchestrator side)", "reqps",
             [(_rate(c.DATAPATH_CALLS, (c.L_MODEL, c.L_OUTCOME)),
               _legend(c.L_MODEL, c.L_OUTCOME))], "timeseries"),
            ("Model call latency p50 / p99 (batch wait and retries included)", "s",
             _p50_p99(c.DATAPATH_CALL_LATENCY, (c.L_MODEL,)), "timeseries"),
            ("Mean rows per micro-batch (orchestrator streaming batcher)", "short",
             [(_mean(c.DATAPATH_BATCH_ROWS, (c.L_MODEL,)), _legend(c.L_MODEL))], "timeseries"),
            ("In-flight requests per replica", "short",
             [(f"sum by ({c.L_MODEL}, {c.L_ENDPOINT}) ({c.DATAPATH_IN_FLIGHT.name})",
               _legend(c.L_MODEL, c.L_ENDPOINT))], "timeseries"),
            ("Retries /s by reason", "reqps",
             [(_rate(c.DATAPATH_RETRIES, (c.L_MODEL, c.L_REASON)),
               _legend(c.L_MODEL, c.L_REASON))], "timeseries"),
            ("Ejections, hedges and no-endpoint failures (5m)", "short",
             [(f"sum by ({c.L_MODEL}) (increase({spec.name}[5m]))",
               _legend(c.L_MODEL, extra=f" {what}"))
              for spec, what in ((c.DATAPATH_EJECTIONS, "ejections"), (c.DATAPATH_HEDGES, "hedges"),
                                 (c.DATAPATH_NO_ENDPOINT, "no endpoint"))], "timeseries"),
            ("Retry budget tokens left", "short",
             [(f"min by ({c.L_MODEL}) ({c.DATAPATH_RETRY_BUDGET.name})", _legend(c.L_MODEL))],
             "timeseries"),
        ],
    ),
    (
        "Decisions and online learning",
        [
            ("Bandit / select / split choices /s", "reqps",
             [(_rate(c.PLAN_DECISIONS, (c.L_PLAN, c.L_STEP, c.L_BRANCH)),
               f"{{{{{c.L_PLAN}}}}}/{{{{{c.L_STEP}}}}} -> {{{{{c.L_BRANCH}}}}}")], "timeseries"),
            ("Feedback /s (applied, duplicate)", "ops",
             [(_rate(c.FEEDBACK_OUTCOMES, (c.L_OUTCOME,)), _legend(c.L_OUTCOME))], "timeseries"),
            ("Mean reward per arm", "percentunit",
             [(promql.ratio(_rate(c.BANDIT_REWARD_SUM, (c.L_PLAN, c.L_STEP, c.L_ARM)),
                            _rate(c.BANDIT_REWARDS, (c.L_PLAN, c.L_STEP, c.L_ARM))),
               _legend(c.L_PLAN, c.L_STEP, c.L_ARM))], "timeseries"),
        ],
    ),
    (
        "Shadows and canaries",
        [
            ("Shadow agreement rate per candidate", "percentunit",
             [(promql.ratio(_rate(c.SHADOW_AGREED_ROWS, _SHADOW),
                            _rate(c.SHADOW_COMPARED_ROWS, _SHADOW)),
               _legend(*_SHADOW))], "timeseries"),
            ("Shadow latency delta (candidate - primary) p50 / p99", "s",
             [_shadow_latency_delta(q) for q in (0.5, 0.99)], "timeseries"),
            ("Shadow candidate errors /s", "reqps",
             [(_rate(c.SHADOW_CANDIDATE_ERRORS, _SHADOW), _legend(*_SHADOW))], "timeseries"),
        ],
    ),
]  # fmt: skip


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
    return write_or_check(OUT, render(), argv, __doc__.splitlines()[0], Path(__file__).name)


if __name__ == "__main__":
    sys.exit(main())
