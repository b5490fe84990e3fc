"""In-memory execution statistics: plan latency, branch decisions, shadow agreement."""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np

from meshserve.orchestrator import metrics
from meshserve.orchestrator.comparison import Comparison, RowComparison
from meshserve.orchestrator.shadows import ShadowKey, ShadowResults, ShadowStatsView
from meshserve.orchestrator.windows import LatencyWindow

__all__ = ["LatencyWindow", "PlanStatsView", "ShadowStatsView", "StatsRecorder"]


@dataclass(frozen=True)
class PlanStatsView:
    plan: str
    count: int
    errors: int
    p50_ms: float
    p99_ms: float
    mean_ms: float
    decisions: dict[str, int]


class StatsRecorder:
    """Thread-safe counters; views are consistent snapshots."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._plans: dict[str, LatencyWindow] = {}
        self._decisions: dict[str, Counter[str]] = {}
        self.shadow_results = ShadowResults()
        # Per plan: (window, ok counter, error counter, latency histogram), resolved once so a
        # request pays no label lookups.
        self._plan_slots: dict[str, tuple[LatencyWindow, Any, Any, Any]] = {}
        # (plan, step, ok) -> its step latency histogram child.
        self._step_slots: dict[tuple[str, str, bool], Any] = {}

    def _plan_slot(self, plan: str) -> tuple[LatencyWindow, Any, Any, Any]:
        with self._lock:
            slot = self._plan_slots.get(plan)
            if slot is None:
                slot = (
                    self._plans.setdefault(plan, LatencyWindow()),
                    metrics.PLAN_REQUESTS.labels(plan, "ok"),
                    metrics.PLAN_REQUESTS.labels(plan, "error"),
                    metrics.PLAN_LATENCY.labels(plan),
                )
                self._plan_slots[plan] = slot
            return slot

    def plan_done(self, plan: str, latency_ms: float, ok: bool) -> None:
        slot = self._plan_slots.get(plan) or self._plan_slot(plan)
        window, ok_total, error_total, latency = slot
        (ok_total if ok else error_total).inc()
        latency.observe(latency_ms / 1000.0)
        with self._lock:
            window.add(latency_ms, ok)

    def step_done(self, plan: str, step: str, latency_s: float, ok: bool) -> None:
        """One step of `plan` ran for `latency_s` (Prometheus only)."""
        child = self._step_slots.get((plan, step, ok))
        if child is None:  # both outcomes at once: an error rate of 0 is a series, not a gap
            for outcome in (True, False):
                self._step_slots[(plan, step, outcome)] = metrics.STEP_LATENCY.labels(
                    plan, step, "ok" if outcome else "error"
                )
            child = self._step_slots[(plan, step, ok)]
        child.observe(latency_s)

    def decision(self, plan: str, step: str, branch: str) -> None:
        metrics.PLAN_DECISIONS.labels(plan, step, branch).inc()
        with self._lock:
            self._decisions.setdefault(plan, Counter())[f"{step}/{branch}"] += 1

    def shadow_primary(self, key: ShadowKey, latency_ms: float) -> None:
        """The primary's latency of a request mirrored to candidate ``key[2]``."""
        metrics.SHADOW_LATENCY.labels(*key, "primary").observe(latency_ms / 1e3)
        self.shadow_results.primary(key, latency_ms)

    def shadow_candidate_failed(self, key: ShadowKey, latency_ms: float) -> None:
        metrics.SHADOW_CANDIDATE_ERRORS.labels(*key).inc()
        self.shadow_results.candidate_failed(key, latency_ms)

    def shadow_candidate(
        self,
        key: ShadowKey,
        latency_ms: float,
        comparison: Comparison,
        rows: RowComparison | None,
        request_id: str,
        outputs: tuple[np.ndarray, np.ndarray] | None,
    ) -> None:
        """One good candidate run; `rows`: its comparison with the primary (None: none)."""
        metrics.SHADOW_CANDIDATE_ERRORS.labels(*key)  # 0 errors is a series too
        metrics.SHADOW_LATENCY.labels(*key, "candidate").observe(latency_ms / 1e3)
        if rows is not None:
            metrics.SHADOW_COMPARED_ROWS.labels(*key).inc(rows.rows)
            metrics.SHADOW_AGREED_ROWS.labels(*key).inc(int(rows.agreed.sum()))
        self.shadow_results.candidate_ran(key, latency_ms, comparison, rows, request_id, outputs)

    def plans(self) -> list[PlanStatsView]:
        with self._lock:
            names = sorted(set(self._plans) | set(self._decisions))
            out = []
            for name in names:
                window = self._plans.get(name, LatencyWindow())
                out.append(
                    PlanStatsView(
                        plan=name,
                        count=window.count,
                        errors=window.errors,
                        p50_ms=window.percentile(50),
                        p99_ms=window.percentile(99),
                        mean_ms=window.mean(),
                        decisions=dict(self._decisions.get(name, {})),
                    )
                )
            return out

    def shadows(self) -> list[ShadowStatsView]:
        return self.shadow_results.views()
