"""Shadow and canary results as first-class data, per (plan, step, candidate).

`ShadowResults` keeps, thread-safely: mirrored runs, candidate errors, compared and agreeing rows
(by the step's comparison, steps/comparison.py), primary and candidate latency windows, and a
bounded sample (`MAX_SAMPLES` per candidate, newest kept) of rows that disagreed.

`ShadowStore` makes the counts and the sample durable in Consul KV, one JSON document per shadow
step at ``<prefix>shadows/<plan>/<step>``, shared by every orchestrator of the namespace: each
`flush` adds what this process recorded since its last flush with check-and-set (a lost race
re-reads and merges again), and `load` on start makes a restarted orchestrator carry on from the
stored totals. Latency windows stay per process (Prometheus has the cluster-wide histograms).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import numpy as np

from meshserve.errors import MeshError
from meshserve.names import kv_dir, kv_key
from meshserve.orchestrator.comparison import Comparison, RowComparison
from meshserve.orchestrator.windows import LatencyWindow

__all__ = [
    "MAX_SAMPLES",
    "Disagreement",
    "ShadowKey",
    "ShadowResults",
    "ShadowStatsView",
    "ShadowStore",
]

log = logging.getLogger(__name__)

MAX_SAMPLES = 32
VALUE_MAX_CHARS = 64
FLUSH_ATTEMPTS = 5


@dataclass(frozen=True)
class Disagreement:
    """One row where the candidate disagreed with the primary."""

    plan: str
    step: str
    candidate: str
    request_id: str
    row: int
    primary_value: str
    candidate_value: str
    distance: float
    unix_ms: int


@dataclass(frozen=True)
class ShadowStatsView:
    """One candidate of one shadow step (Admin.GetStats ``ShadowStats``)."""

    plan: str
    step: str
    candidate: str
    compared: int
    agreed: int
    runs: int
    candidate_errors: int
    agreement_rate: float
    comparison: str
    tolerance: float
    candidate_latency_p50_ms: float
    candidate_latency_p99_ms: float
    primary_latency_p50_ms: float
    primary_latency_p99_ms: float


@dataclass
class _Tally:
    runs: int = 0
    errors: int = 0
    compared: int = 0
    agreed: int = 0

    def add(self, other: _Tally, sign: int = 1) -> None:
        self.runs += sign * other.runs
        self.errors += sign * other.errors
        self.compared += sign * other.compared
        self.agreed += sign * other.agreed

    def total(self, other: _Tally) -> _Tally:
        out = _Tally(**asdict(self))
        out.add(other)
        return out


@dataclass
class _Candidate:
    comparison: str = "label"
    tolerance: float = 0.0
    durable: _Tally = field(default_factory=_Tally)  # as stored at the last load or flush
    pending: _Tally = field(default_factory=_Tally)  # recorded here since
    samples: deque[Disagreement] = field(default_factory=lambda: deque(maxlen=MAX_SAMPLES))
    pending_samples: list[Disagreement] = field(default_factory=list)
    primary: LatencyWindow = field(default_factory=LatencyWindow)
    candidate: LatencyWindow = field(default_factory=LatencyWindow)


ShadowKey = tuple[str, str, str]  # (plan, step, candidate)


@dataclass(frozen=True)
class _Unflushed:
    """What one candidate recorded since the last flush (and its comparison)."""

    tally: _Tally
    samples: list[Disagreement]
    comparison: str
    tolerance: float


Unflushed = dict[str, _Unflushed]  # candidate -> its unflushed part, for one shadow step


def _render(values: np.ndarray, row: int) -> str:
    """A short rendering of one row of an output."""
    value = np.asarray(values)[row] if np.ndim(values) else np.asarray(values)
    text = np.array2string(np.asarray(value), precision=4, threshold=8, separator=",")
    return text if len(text) <= VALUE_MAX_CHARS else text[: VALUE_MAX_CHARS - 3] + "..."


class ShadowResults:
    """Everything shadow steps record; views for Admin.GetStats and ListShadowDisagreements."""

    def __init__(self, wall_clock_ms: Callable[[], int] = lambda: int(time.time() * 1000)):
        self._lock = threading.Lock()
        self._entries: dict[ShadowKey, _Candidate] = {}
        self._wall_ms = wall_clock_ms

    def _entry(self, key: ShadowKey) -> _Candidate:
        entry = self._entries.get(key)
        if entry is None:
            entry = self._entries[key] = _Candidate()
        return entry

    def primary(self, key: ShadowKey, latency_ms: float) -> None:
        with self._lock:
            self._entry(key).primary.add(latency_ms)

    def candidate_failed(self, key: ShadowKey, latency_ms: float) -> None:
        with self._lock:
            entry = self._entry(key)
            entry.candidate.add(latency_ms, ok=False)
            entry.pending.runs += 1
            entry.pending.errors += 1

    def candidate_ran(
        self,
        key: ShadowKey,
        latency_ms: float,
        comparison: Comparison,
        rows: RowComparison | None,
        request_id: str,
        outputs: tuple[np.ndarray, np.ndarray] | None,
    ) -> None:
        """Record one good candidate run; `rows` None: nothing to compare (primary failed)."""
        samples: list[Disagreement] = []
        if rows is not None and outputs is not None:
            now = self._wall_ms()
            for row in np.flatnonzero(~rows.agreed)[:MAX_SAMPLES]:
                samples.append(
                    Disagreement(
                        *key,
                        request_id=request_id,
                        row=int(row),
                        primary_value=_render(outputs[0], int(row)),
                        candidate_value=_render(outputs[1], int(row)),
                        distance=float(rows.distance[row]),
                        unix_ms=now,
                    )
                )
        with self._lock:
            entry = self._entry(key)
            entry.comparison, entry.tolerance = comparison.name, comparison.tolerance
            entry.candidate.add(latency_ms)
            entry.pending.runs += 1
            if rows is not None:
                entry.pending.compared += rows.rows
                entry.pending.agreed += int(rows.agreed.sum())
            entry.samples.extend(samples)
            entry.pending_samples.extend(samples)
            del entry.pending_samples[:-MAX_SAMPLES]

    # ----- views -------------------------------------------------------------------------------
    def views(self) -> list[ShadowStatsView]:
        with self._lock:
            out = []
            for (plan, step, candidate), e in sorted(self._entries.items()):
                total = e.durable.total(e.pending)
                out.append(
                    ShadowStatsView(
                        plan=plan,
                        step=step,
                        candidate=candidate,
                        compared=total.compared,
                        agreed=total.agreed,
                        runs=total.runs,
                        candidate_errors=total.errors,
                        agreement_rate=total.agreed / total.compared if total.compared else 0.0,
                        comparison=e.comparison,
                        tolerance=e.tolerance,
                        candidate_latency_p50_ms=e.candidate.percentile(50),
                        candidate_latency_p99_ms=e.candidate.percentile(99),
                        primary_latency_p50_ms=e.primary.percentile(50),
                        primary_latency_p99_ms=e.primary.percentile(99),
                    )
                )
            return out

    def disagreements(
        self, plan: str = "", step: str = "", candidate: str = "", limit: int = 0
    ) -> list[Disagreement]:
        """Kept disagreements matching the (empty = any) filters, newest first."""
        with self._lock:
            found = [
                d
                for (p, s, c), e in self._entries.items()
                if (not plan or p == plan) and (not step or s == step)
                and (not candidate or c == candidate)
                for d in e.samples
            ]  # fmt: skip
        found.sort(key=lambda d: d.unix_ms, reverse=True)
        return found[:limit] if limit else found

    # ----- persistence (ShadowStore) --------------------------------------------------------
    def pending(self) -> dict[tuple[str, str], Unflushed]:
        """A copy of what was recorded since the last flush, per (plan, step) and candidate."""
        out: dict[tuple[str, str], Unflushed] = {}
        with self._lock:
            for (plan, step, candidate), e in self._entries.items():
                if e.pending.runs or e.pending_samples:
                    out.setdefault((plan, step), {})[candidate] = _Unflushed(
                        _Tally(**asdict(e.pending)),
                        list(e.pending_samples),
                        e.comparison,
                        e.tolerance,
                    )
        return out

    def stored(
        self,
        plan: str,
        step: str,
        document: dict[str, Any],
        flushed: Unflushed | None = None,
    ) -> None:
        """`document` is what KV holds now; `flushed`: the pending part it includes."""
        candidates = document.get("candidates", {})
        with self._lock:
            for candidate, doc in candidates.items():
                entry = self._entry((plan, step, candidate))
                entry.durable = _Tally(
                    **{k: int(doc.get(k, 0)) for k in ("runs", "errors", "compared", "agreed")}
                )
                entry.comparison = str(doc.get("comparison", entry.comparison))
                entry.tolerance = float(doc.get("tolerance", entry.tolerance))
                if flushed and candidate in flushed:
                    entry.pending.add(flushed[candidate].tally, sign=-1)
                    sent = {id(s) for s in flushed[candidate].samples}
                    entry.pending_samples = [s for s in entry.pending_samples if id(s) not in sent]
                stored = [Disagreement(**s) for s in doc.get("samples", ())]
                entry.samples = deque(
                    [*stored, *entry.pending_samples][-MAX_SAMPLES:], maxlen=MAX_SAMPLES
                )


def merged_document(document: dict[str, Any], flushed: Unflushed) -> dict[str, Any]:
    """`document` (a stored shadow step) plus what one orchestrator recorded since its flush."""
    candidates = {k: dict(v) for k, v in document.get("candidates", {}).items()}
    for candidate, part in flushed.items():
        doc = candidates.setdefault(candidate, {})
        for name, value in asdict(part.tally).items():
            doc[name] = int(doc.get(name, 0)) + value
        doc["comparison"], doc["tolerance"] = part.comparison, part.tolerance
        samples = [*doc.get("samples", ()), *(asdict(s) for s in part.samples)]
        doc["samples"] = samples[-MAX_SAMPLES:]
    return {"candidates": candidates}


class KVLike(Protocol):
    """The part of meshserve.registry.KV the store uses."""

    async def get(self, key: str) -> Any: ...

    async def put(self, key: str, value: bytes, cas: int | None = None) -> bool: ...

    async def list(self, prefix: str) -> Any: ...


class ShadowStore:
    """Shadow results in Consul KV (check-and-set merges; see the module docstring)."""

    def __init__(self, kv: KVLike, results: ShadowResults, prefix: str) -> None:
        self._kv = kv
        self._results = results
        self._dir = kv_dir(prefix, "shadows")
        self._prefix = prefix
        self._task: asyncio.Task[None] | None = None

    def _key(self, plan: str, step: str) -> str:
        return kv_key(self._prefix, "shadows", plan, step)

    async def load(self) -> int:
        """Read every stored shadow step into the results; returns how many."""
        entries: Iterable[Any] = await self._kv.list(self._dir)
        loaded = 0
        for entry in entries:
            plan, _, step = entry.key.removeprefix(self._dir).partition("/")
            try:
                document = json.loads(bytes(entry.value).decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError):
                log.warning("shadow results at %s are not JSON; ignored", entry.key)
                continue
            self._results.stored(plan, step, document)
            loaded += 1
        return loaded

    async def flush(self) -> int:
        """Add what was recorded since the last flush to KV; returns shadow steps written."""
        written = 0
        for (plan, step), flushed in self._results.pending().items():
            key = self._key(plan, step)
            for _ in range(FLUSH_ATTEMPTS):
                entry = await self._kv.get(key)
                document = json.loads(bytes(entry.value).decode("utf-8")) if entry else {}
                merged = merged_document(document, flushed)
                body = json.dumps(merged, separators=(",", ":"), sort_keys=True).encode()
                if await self._kv.put(key, body, cas=entry.modify_index if entry else 0):
                    self._results.stored(plan, step, merged, flushed)
                    written += 1
                    break
            else:
                log.info("shadow results of %s/%s: lost %d CAS races; next flush", plan, step,
                         FLUSH_ATTEMPTS)  # fmt: skip
        return written

    def start(self, interval_s: float) -> None:
        """Flush every `interval_s` in the background until `stop`."""

        async def loop() -> None:
            while True:
                await asyncio.sleep(interval_s)
                try:
                    await self.flush()
                except MeshError as exc:  # Consul away: keep counting, flush later
                    log.warning("shadow results not flushed: %s", exc)

        self._task = asyncio.get_running_loop().create_task(loop())

    async def stop(self) -> None:
        """Stop the loop and flush once more (best effort)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with contextlib.suppress(MeshError):
            await self.flush()
