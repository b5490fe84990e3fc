"""In-memory execution statistics: plan latency, branch decisions, shadow agreement."""

from __future__ import annotations

import threading
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from meshserve.orchestrator import metrics

__all__ = ["LatencyWindow", "PlanStatsView", "ShadowStatsView", "StatsRecorder"]

WINDOW = 2048


@dataclass
class LatencyWindow:
    """Count, errors and the latest `WINDOW` latencies (for percentiles)."""

    count: int = 0
    errors: int = 0
    samples_ms: deque[float] = field(default_factory=lambda: deque(maxlen=WINDOW))

    def add(self, latency_ms: float, ok: bool = True) -> None:
        self.count += 1
        if not ok:
            self.errors += 1
        self.samples_ms.append(latency_ms)

    def percentile(self, q: float) -> float:
        return float(np.percentile(list(self.samples_ms), q)) if self.samples_ms else 0.0

    def mean(self) -> float:
        return float(np.mean(list(self.samples_ms))) if self.samples_ms else 0.0


@dataclass(frozen=True)
class PlanStatsView:
    plan: str
    count: int
    errors: int
    p50_ms: float
    p99_ms: float
    mean_ms: float
    decisions: dict[str, int]


@dataclass(frozen=True)
class ShadowStatsView:
    plan: str
    step: str
    compared: int
    agreed: int
    candidate_errors: int
    candidate_latency_p50_ms: float
    primary_latency_p50_ms: float


@dataclass
class _Shadow:
    compared: int = 0
    agreed: int = 0
    candidate: LatencyWindow = field(default_factory=LatencyWindow)
    primary: LatencyWindow = field(default_factory=LatencyWindow)


class StatsRecorder:
    """Thread-safe counters; views are consistent snapshots."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._plans: dict[str, LatencyWindow] = {}
        self._decisions: dict[str, Counter[str]] = {}
        self._shadows: dict[tuple[str, str], _Shadow] = {}
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

    def shadow_primary(self, plan: str, step: str, latency_ms: float, candidate: str = "") -> None:
        """Record the primary's latency of a mirrored request (`candidate`: what it is compared
        with, so the dashboard can put the two latencies side by side)."""
        metrics.SHADOW_LATENCY.labels(plan, step, candidate, "primary").observe(latency_ms / 1e3)
        with self._lock:
            self._shadows.setdefault((plan, step), _Shadow()).primary.add(latency_ms)

    def shadow_candidate(
        self,
        plan: str,
        step: str,
        latency_ms: float,
        ok: bool,
        *,
        agreed: int = 0,
        compared: int = 0,
        candidate: str = "",
    ) -> None:
        """Record one run of `candidate`: `compared` rows of which `agreed` agreed with the
        primary (by the step's comparison)."""
        labels = (plan, step, candidate)
        errors = metrics.SHADOW_CANDIDATE_ERRORS.labels(*labels)  # 0 errors is a series too
        if not ok:
            errors.inc()
        else:
            metrics.SHADOW_LATENCY.labels(*labels, "candidate").observe(latency_ms / 1e3)
        metrics.SHADOW_COMPARED_ROWS.labels(*labels).inc(compared)
        metrics.SHADOW_AGREED_ROWS.labels(*labels).inc(agreed)
        with self._lock:
            shadow = self._shadows.setdefault((plan, step), _Shadow())
            shadow.candidate.add(latency_ms, ok)
            shadow.compared += compared
            shadow.agreed += agreed

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
        with self._lock:
            return [
                ShadowStatsView(
                    plan=plan,
                    step=step,
                    compared=s.compared,
                    agreed=s.agreed,
                    candidate_errors=s.candidate.errors,
                    candidate_latency_p50_ms=s.candidate.percentile(50),
                    primary_latency_p50_ms=s.primary.percentile(50),
                )
                for (plan, step), s in sorted(self._shadows.items())
            ]
