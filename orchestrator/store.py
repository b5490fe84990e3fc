"""Plans (every version) and traffic policies, persisted in Consul KV with check-and-set.

KV layout (docs/CONTRACTS.md), under a namespace `prefix` (default ``meshserve/``, so that
independent orchestrator groups can share one Consul): ``<prefix>plans/<name>/<version>`` holds
the plan JSON (a ``put_large`` manifest when it is big), ``<prefix>plans/<name>/active`` the
active version, ``<prefix>traffic/<model>`` a traffic policy as JSON, and ``<prefix>plans/.store``
a marker that says the KV holds this store's state.

Writes are fenced by check-and-set, so any number of orchestrators may write concurrently: a new
version key is created with ``cas=0`` (only one writer can create version N), and the active
pointer is replaced with ``cas=<its ModifyIndex>`` and never moved backwards. Every orchestrator
keeps an in-memory view refreshed by blocking-query watches, so plans applied through one are
served by all of them, and a restarted orchestrator serves the same plans.

Persisting is reconciliation (like registration): the in-memory view is the desired state and a
KV that lost it is written again. When a watch answer lacks the marker key, the KV was wiped (a
restarted *dev* Consul agent keeps nothing, an operator deleted the prefix): the store keeps
serving what it holds and re-creates every version, active pointer and traffic policy it knows
with ``cas=0`` (never overwriting what another orchestrator wrote meanwhile). A plan deleted
through Admin leaves the marker in place, so deletions still propagate to every orchestrator.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from meshserve.errors import CheckAndSetError, InvalidInputError, NotFoundError
from meshserve.names import check_name, check_prefix, kv_dir, kv_key, quote
from meshserve.orchestrator.plans.parse import dumps_json, loads_json
from meshserve.orchestrator.traffic import TrafficPolicy, TrafficTable
from meshserve.orchestrator.traffic_kv import CAS_ATTEMPTS, TrafficPolicies, decode_policy
from meshserve.registry import KVEntry
from meshserve.v1 import plan_pb2

__all__ = [
    "DEFAULT_PREFIX",
    "PLANS_PREFIX",
    "TRAFFIC_PREFIX",
    "KVStore",
    "PlanInfo",
    "PlanStore",
]

log = logging.getLogger(__name__)

DEFAULT_PREFIX = "meshserve/"
PLANS_PREFIX = DEFAULT_PREFIX + "plans/"
TRAFFIC_PREFIX = DEFAULT_PREFIX + "traffic/"
MARKER_LEAF = ".store"
LARGE_PLAN_BYTES = 256 * 1024
_MANIFEST_MARK = b'"format": "meshserve-chunked-v1"'


class KVStore(Protocol):
    """The part of meshserve.registry.KV the store uses."""

    async def get(self, key: str) -> KVEntry | None: ...
    async def put(self, key: str, value: bytes | str, cas: int | None = None) -> bool: ...
    async def delete(self, key: str, cas: int | None = None, *, recurse: bool = False) -> bool: ...
    async def list(self, prefix: str) -> builtins.list[KVEntry]: ...
    async def put_large(self, key: str, value: bytes, cas: int | None = None) -> int: ...
    async def get_large(self, key: str) -> bytes | None: ...
    def watch(self, prefix: str) -> Any: ...


@dataclass
class PlanInfo:
    """Every known version of one plan and which one is active."""

    name: str
    versions: dict[int, plan_pb2.Plan] = field(default_factory=dict)
    active: int = 0

    def active_plan(self) -> plan_pb2.Plan:
        return self.versions[self.active]


def _same_content(a: plan_pb2.Plan, b: plan_pb2.Plan) -> bool:
    x, y = plan_pb2.Plan(), plan_pb2.Plan()
    x.CopyFrom(a)
    y.CopyFrom(b)
    for p in (x, y):
        p.version = 0
        p.created_unix_ms = 0
        p.ClearField("typed")  # derived by the orchestrator, not content
    return x.SerializeToString(deterministic=True) == y.SerializeToString(deterministic=True)


class PlanStore:
    """The orchestrator's plans and traffic policies (see module docstring)."""

    def __init__(
        self,
        kv: KVStore,
        traffic: TrafficTable | None = None,
        *,
        prefix: str = DEFAULT_PREFIX,
        wall_clock_ms: Callable[[], int] = lambda: int(time.time() * 1000),
    ) -> None:
        check_prefix(prefix)
        self.kv = kv
        self.prefix = prefix
        self.plans_prefix = kv_dir(prefix, "plans")
        self.traffic_prefix = kv_dir(prefix, "traffic")
        self.policies = TrafficPolicies(kv, self.traffic_prefix)
        self.marker_key = kv_key(self.plans_prefix, MARKER_LEAF)
        self.traffic = traffic or TrafficTable()
        self._wall_clock_ms = wall_clock_ms  # timestamps only, never intervals
        self._plans: dict[str, PlanInfo] = {}
        self._parsed: dict[str, tuple[int, plan_pb2.Plan]] = {}  # key -> (modify index, plan)
        self._tasks: list[asyncio.Task[None]] = []
        self._changed = asyncio.Event()
        self._listeners: list[Callable[[], None]] = []
        self._pending: dict[str, set[int]] = {}  # versions we wrote, not yet seen in a snapshot
        self._deleted: dict[str, int] = {}  # plans we deleted -> when (wall-clock ms)
        self._lock = asyncio.Lock()
        self._store_id = ""  # the marker value of the KV state our view follows
        self._reconcile = asyncio.Event()

    # ---- lifecycle --------------------------------------------------------------------------
    async def start(self) -> None:
        """Load everything once, then follow changes (and re-persist after a KV loss)."""
        await self.refresh()
        self._tasks = [
            asyncio.create_task(self._watch_plans(), name="watch-plans"),
            asyncio.create_task(self._watch_traffic(), name="watch-traffic"),
            asyncio.create_task(self._reconcile_loop(), name="reconcile-plans"),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []

    async def refresh(self) -> None:
        """Re-read plans and traffic policies from KV now."""
        await self._load_plans(await self.kv.list(self.plans_prefix))
        await self._load_traffic(await self.kv.list(self.traffic_prefix))

    async def _watch_plans(self) -> None:
        async for entries in self.kv.watch(self.plans_prefix):
            try:
                await self._load_plans(entries)
            except Exception:
                log.exception("could not load plans from KV")

    async def _watch_traffic(self) -> None:
        async for entries in self.kv.watch(self.traffic_prefix):
            try:
                await self._load_traffic(entries)
            except Exception:
                log.exception("could not load traffic policies from KV")

    def _authoritative(self, marker: KVEntry | None) -> bool:
        """Whether a KV view replaces ours: it carries the marker of the state we follow (or,
        before we follow any, we hold nothing that it could lose)."""
        if marker is None:
            return False
        store_id = marker.value.decode(errors="replace")
        if store_id == self._store_id or (not self._store_id and not self._plans):
            self._store_id = store_id
            return True
        return False

    async def _load_plans(self, entries: list[KVEntry]) -> None:
        async with self._lock:
            plans: dict[str, PlanInfo] = {}
            actives: dict[str, int] = {}
            marker: KVEntry | None = None
            for entry in entries:
                if entry.key == self.marker_key:
                    marker = entry
                    continue
                parts = entry.key[len(self.plans_prefix) :].split("/")
                if len(parts) != 2:
                    continue  # chunks of large plans
                name, leaf = parts
                if leaf == "active":
                    with contextlib.suppress(ValueError):
                        actives[name] = int(entry.value.decode() or 0)
                    continue
                if not leaf.isdigit():
                    continue
                plan = await self._parse_entry(entry)
                if plan is not None:
                    plans.setdefault(name, PlanInfo(name)).versions[int(leaf)] = plan
            for name, info in plans.items():
                active = actives.get(name, 0)
                info.active = active if active in info.versions else max(info.versions)
            self._keep_local_writes(plans)
            if not self._authoritative(marker):
                # The KV lost (or never had) our state: keep serving what we hold, merged with
                # what it has, and write ours back.
                if self._plans:
                    log.warning(
                        "plan store under %r lost its state in Consul KV (%d plans kept from "
                        "memory); re-persisting", self.prefix, len(self._plans),
                    )  # fmt: skip
                for name, held in self._plans.items():
                    info = plans.setdefault(name, PlanInfo(name))
                    for version, plan in held.versions.items():
                        info.versions.setdefault(version, plan)
                    info.active = max(info.active, held.active)
                self._reconcile.set()
            self._plans = plans
            keys = {e.key for e in entries}
            self._parsed = {k: v for k, v in self._parsed.items() if k in keys}
            self._changed.set()
            self._changed = asyncio.Event()
        self._notify()

    def _keep_local_writes(self, plans: dict[str, PlanInfo]) -> None:
        """Read-your-writes: a watch snapshot read before one of our own applies or deletes
        reached Consul must not undo it. Versions we wrote stay (and stay active) until a
        snapshot holds them with its active pointer there; plans we deleted stay gone while a
        snapshot shows only versions created before the delete."""
        for name, versions in list(self._pending.items()):
            held = self._plans.get(name)
            info = plans.setdefault(name, PlanInfo(name))
            for version in sorted(versions):
                if version in info.versions and info.active >= version:
                    versions.discard(version)  # the snapshot has it, and as active (or newer)
                    continue
                if version not in info.versions and held is not None and version in held.versions:
                    info.versions[version] = held.versions[version]
                if version in info.versions:
                    info.active = max(info.active, version)
            if not versions:
                del self._pending[name]
            if not info.versions:
                del plans[name]
        for name, deleted_ms in list(self._deleted.items()):
            seen = plans.get(name)
            if seen is None:
                del self._deleted[name]
            elif all(p.created_unix_ms <= deleted_ms for p in seen.versions.values()):
                del plans[name]  # a snapshot from before our delete
            else:
                del self._deleted[name]  # applied again (here or elsewhere) since

    async def _reconcile_loop(self) -> None:
        """Write the state we serve back to a KV that lost it; retry until it sticks."""
        delay_s = 0.1
        while True:
            await self._reconcile.wait()
            self._reconcile.clear()
            try:
                await self._persist_all()
                delay_s = 0.1
            except Exception as exc:  # Consul down or refusing: keep serving, retry later
                log.warning("re-persisting plans failed (retry in %.1fs): %s", delay_s, exc)
                self._reconcile.set()
                await asyncio.sleep(delay_s)
                delay_s = min(delay_s * 2, 5.0)

    async def _persist_all(self) -> None:
        """Create every version, active pointer and traffic policy we hold that the KV lacks
        (cas=0: what another writer stored meanwhile wins), then the marker."""
        async with self._lock:
            plans = [(info.name, dict(info.versions), info.active) for info in self.infos()]
            policies = self.traffic.policies()
        for name, versions, active in plans:
            for version, plan in sorted(versions.items()):
                await self._create_version(kv_key(self.plans_prefix, name, str(version)), plan)
            await self._set_active(name, active)
        for policy in policies:
            await self.policies.restore(policy)
        store_id = secrets.token_hex(8)
        if not await self.kv.put(self.marker_key, store_id, cas=0):
            entry = await self.kv.get(self.marker_key)
            store_id = entry.value.decode(errors="replace") if entry else store_id
        async with self._lock:
            self._store_id = store_id
        log.info("plan store under %r: %d plans persisted to Consul KV", self.prefix, len(plans))

    async def _create_version(self, key: str, plan: plan_pb2.Plan) -> bool:
        """Create a version key (cas=0); False when it exists already."""
        data = dumps_json(plan)
        if len(data) > LARGE_PLAN_BYTES:
            try:
                await self.kv.put_large(key, data, cas=0)
            except CheckAndSetError:
                return False
            return True
        return await self.kv.put(key, data, cas=0)

    async def _parse_entry(self, entry: KVEntry) -> plan_pb2.Plan | None:
        cached = self._parsed.get(entry.key)
        if cached is not None and cached[0] == entry.modify_index:
            return cached[1]
        try:
            data = entry.value
            if _MANIFEST_MARK in data[:200]:
                data = await self.kv.get_large(entry.key) or b""
            plan = loads_json(data)
        except Exception as exc:
            log.error("plan at %s is unreadable: %s", entry.key, exc)
            return None
        self._parsed[entry.key] = (entry.modify_index, plan)
        return plan

    async def _load_traffic(self, entries: list[KVEntry]) -> None:
        policies: dict[str, TrafficPolicy] = {}
        for entry in entries:
            try:
                policy = decode_policy(entry)
            except (ValueError, KeyError, TypeError) as exc:
                log.error("traffic policy at %s is unreadable: %s", entry.key, exc)
                continue
            policies[policy.model] = policy
        held = {p.model: p for p in self.traffic.policies()}
        if set(held) - set(policies):
            marker = await self.kv.get(self.marker_key)
            async with self._lock:
                lost = marker is None or marker.value.decode(errors="replace") != self._store_id
            if lost:  # not a deletion: the KV lost them; keep them and write them back
                policies = {**held, **policies}
                self._reconcile.set()
        self.traffic.replace_all(policies)

    async def wait_for(self, predicate: Callable[[PlanStore], bool], timeout_s: float) -> bool:
        """Wait until `predicate(self)` holds (after watch updates); False on timeout."""
        deadline = asyncio.get_running_loop().time() + timeout_s
        while not predicate(self):
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                return False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)
        return True

    # ---- reads (PlanSource) -----------------------------------------------------------------
    def get(self, name: str, version: int = 0) -> plan_pb2.Plan:
        """A plan version (0 = active); NotFoundError names what exists."""
        info = self._plans.get(name)
        if info is None:
            raise NotFoundError(f"plan {quote(name)} does not exist (plans: {self._names()})")
        if version == 0:
            return info.active_plan()
        plan = info.versions.get(version)
        if plan is None:
            raise NotFoundError(
                f"plan '{name}' has no version {version} (versions: {sorted(info.versions)})"
            )
        return plan

    def _names(self, limit: int = 20) -> str:
        names = self.names()
        more = f" and {len(names) - limit} more" if len(names) > limit else ""
        return f"{names[:limit]}{more}"

    def exists(self, name: str) -> bool:
        return name in self._plans

    def on_change(self, callback: Callable[[], None]) -> None:
        """Call `callback` (on the loop, no arguments) whenever the set of plans may change."""
        self._listeners.append(callback)

    def _notify(self) -> None:
        for callback in self._listeners:
            callback()

    def names(self) -> list[str]:
        """Names of every plan with an active version here, sorted."""
        return sorted(self._plans)

    def infos(self) -> list[PlanInfo]:
        return [self._plans[n] for n in sorted(self._plans)]

    # ---- writes -----------------------------------------------------------------------------
    async def apply(self, plan: plan_pb2.Plan, expected_version: int = 0) -> int:
        """Store `plan` as a new version and make it active; returns the version.

        `expected_version` (when not 0) must be the latest version, else CheckAndSetError.
        """
        name = plan.name
        for _ in range(CAS_ATTEMPTS):
            versions = await self._versions(name)
            held = self._plans.get(name)
            # versions we serve count too: a KV that lost them must not get their numbers reused
            latest = max([*versions, *(held.versions if held else ())], default=0)
            if expected_version and latest != expected_version:
                raise CheckAndSetError(
                    f"plan '{name}' is at version {latest}, not the expected {expected_version} "
                    "(someone else applied it; re-read and retry)"
                )
            stored = plan_pb2.Plan()
            stored.CopyFrom(plan)
            stored.version = latest + 1
            stored.created_unix_ms = self._wall_clock_ms()
            key = kv_key(self.plans_prefix, name, str(stored.version))
            created = await self._create_version(key, stored)
            if not created:
                if expected_version:
                    raise CheckAndSetError(
                        f"plan '{name}' version {stored.version} was created concurrently"
                    )
                continue
            self._pending.setdefault(name, set()).add(stored.version)
            self._deleted.pop(name, None)
            await self._set_active(name, stored.version)
            self._remember(stored)
            return stored.version
        raise CheckAndSetError(f"plan '{name}': too many concurrent writers; retry")

    async def _versions(self, name: str) -> list[int]:
        entries = await self.kv.list(kv_dir(self.plans_prefix, name))
        out = []
        for entry in entries:
            leaf = entry.key[len(self.plans_prefix) + len(name) + 1 :]
            if leaf.isdigit():
                out.append(int(leaf))
        return out

    async def _set_active(self, name: str, version: int) -> None:
        key = kv_key(self.plans_prefix, name, "active")
        for _ in range(CAS_ATTEMPTS):
            entry = await self.kv.get(key)
            if entry is not None:
                with contextlib.suppress(ValueError):
                    if int(entry.value.decode() or 0) >= version:
                        return  # a newer version is already active
            if await self.kv.put(key, str(version), cas=entry.modify_index if entry else 0):
                return
        raise CheckAndSetError(f"plan '{name}': could not move the active version to {version}")

    def _remember(self, plan: plan_pb2.Plan) -> None:
        info = self._plans.setdefault(plan.name, PlanInfo(plan.name))
        info.versions[plan.version] = plan
        info.active = max(info.active, plan.version)
        self._notify()

    async def seed(self, plan: plan_pb2.Plan, written_unix_ms: int) -> tuple[int, str]:
        """Apply a startup plan (``--plans`` file, ``--python-plan``) without overriding anyone.

        It is applied only when no version of that plan has the same content and the active
        version is older than `written_unix_ms` (the file's modification time; the process start
        for a flag). So a restart never re-applies a file over what an operator applied since,
        and an edited file still rolls out. Returns (active version, what was decided).
        """
        info = self._plans.get(plan.name)
        if info is not None:
            same = [v for v, stored in info.versions.items() if _same_content(stored, plan)]
            if same:
                return info.active, f"kept: the content is already version {max(same)}"
            active = info.active_plan()
            if active.created_unix_ms >= written_unix_ms:
                return info.active, (
                    f"kept: active version {info.active} is newer than the startup plan"
                )
        return await self.apply(plan), "applied"

    async def rollback(
        self, name: str, to_version: int, prepare: Callable[[plan_pb2.Plan], None] | None = None
    ) -> int:
        """Store version `to_version`'s content as a new, active version (`prepare` may adjust
        a copy of it first)."""
        check_name("plan", name)
        old = self.get(name, to_version) if to_version else None
        if old is None:
            raise InvalidInputError(f"rollback of plan '{name}': 'to_version' is required")
        if prepare is not None:
            copy = plan_pb2.Plan()
            copy.CopyFrom(old)
            prepare(copy)
            old = copy
        return await self.apply(old)

    async def delete(self, name: str) -> int:
        """Delete every version of `name`; returns how many there were."""
        versions = await self._versions(check_name("plan", name))
        if not versions:
            raise NotFoundError(f"plan '{name}' does not exist (plans: {self._names()})")
        await self.kv.delete(kv_dir(self.plans_prefix, name), recurse=True)
        self._plans.pop(name, None)
        self._pending.pop(name, None)
        self._deleted[name] = self._wall_clock_ms()
        self._notify()
        return len(versions)

    async def set_traffic(self, policy: TrafficPolicy) -> None:
        """Store (CAS, through the one writer) and apply locally a model's traffic policy."""
        await self.policies.write(policy)
        self.traffic.set(policy)
