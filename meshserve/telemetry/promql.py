"""PromQL built from the metric specs in catalog.py, for the dashboard and the alerting rules.

Both ``deploy/grafana/build_dashboard.py`` and ``deploy/prometheus/build_rules.py`` write their
queries with these, so a query names only metrics and labels a process exports.
"""

from __future__ import annotations

from meshserve.telemetry.catalog import MetricSpec

__all__ = ["mean", "quantile", "rate", "ratio", "selector"]


def selector(**labels: str) -> str:
    """``{a="x",b="y"}`` (empty string for no labels)."""
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}"


def rate(
    spec: MetricSpec, by: tuple[str, ...], window: str, match: str = "", suffix: str = ""
) -> str:
    """``sum by (by) (rate(series{match}[window]))``."""
    return f"sum by ({', '.join(by)}) (rate({spec.series(suffix)}{match}[{window}]))"


def ratio(numerator: str, denominator: str) -> str:
    return f"{numerator} / {denominator}"


def quantile(q: float, spec: MetricSpec, by: tuple[str, ...], window: str, match: str = "") -> str:
    """The `q` quantile of a histogram per `by`."""
    return f"histogram_quantile({q}, {rate(spec, (*by, 'le'), window, match, '_bucket')})"


def mean(spec: MetricSpec, by: tuple[str, ...], window: str) -> str:
    """Mean observation of a histogram per `by` (rate of _sum over rate of _count)."""
    return ratio(rate(spec, by, window, suffix="_sum"), rate(spec, by, window, suffix="_count"))
