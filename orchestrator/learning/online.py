"""One online learner: its config, weights, version history, and the export -> validate -> deploy
-> shift traffic -> rollback cycle.

Cycle (run in the background after every `export_every` labelled updates, one at a time):
1. snapshot the weights; name the candidate ``v<next_version>``;
2. validate it on the holdout: accuracy >= `min_accuracy` and not below the deployed version's
   accuracy minus `regression_tolerance`; export it to ONNX and check that onnxruntime agrees
   with the numpy predictions on the holdout (>= 99% of rows) -- a failed check marks the
   candidate "rejected" and nothing is deployed;
3. deploy it (a model service process registered in Consul) and shift all traffic to it; the
   version it replaced stays up as "standby" for rollback, older ones are retired.
Live guard: every labelled example also scores the deployed and the standby weights; when the
deployed version's accuracy over the last `live_window` examples falls below the standby's by more
than `regression_tolerance`, traffic goes back to the standby (status "rolled_back").
The document persisted in KV holds config, weights, counters, history and the weights of the
deployed and standby versions, so a restarted orchestrator resumes (and can redeploy) exactly.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any, Protocol

import numpy as np

from meshserve.errors import InvalidInputError
from meshserve.orchestrator.learning.learner import SoftmaxRegression, export_onnx

__all__ = ["Deployer", "LearnerConfig", "LearnerSlot"]

log = logging.getLogger(__name__)

MAX_HISTORY = 50  # version history entries kept per learner (the KV document stays bounded)


class Deployer(Protocol):
    """Starts model versions and moves traffic between them (see learning.rollout)."""

    async def deploy(self, model: str, version: str, onnx_model: bytes) -> None: ...

    async def set_traffic(self, model: str, weights: Mapping[str, float]) -> None: ...

    async def retire(self, model: str, version: str) -> None: ...


@dataclass(frozen=True)
class LearnerConfig:
    """How a learner learns and when its versions ship (from a plan's ``learner.observe`` params).

    `model` is the Consul service name its versions are deployed as (default: the learner name);
    `holdout_path` a .npz with ``x`` and ``y`` used to validate candidates.
    """

    name: str
    model: str = ""
    n_features: int = 64
    n_classes: int = 10
    lr: float = 0.2
    l2: float = 1e-4
    input_scale: float = 1.0 / 16.0
    input_name: str = "input"
    export_every: int = 50
    holdout_path: str = ""
    min_accuracy: float = 0.5
    regression_tolerance: float = 0.02
    live_window: int = 50

    @property
    def service(self) -> str:
        return self.model or self.name

    @classmethod
    def from_params(cls, name: str, params: Mapping[str, Any]) -> LearnerConfig:
        known = {f.name: f.type for f in fields(cls)} | {"learner": str, "features": str}
        unknown = sorted(set(params) - set(known))
        if unknown:
            raise InvalidInputError(
                f"learner {name!r}: unknown params {unknown}; expected some of {sorted(known)}"
            )
        values: dict[str, Any] = {"name": name}
        for f in fields(cls):
            if f.name in params and f.name != "name":
                caster = {"int": int, "float": float, "str": str}[str(f.type)]
                try:
                    values[f.name] = caster(params[f.name])
                except (TypeError, ValueError):
                    raise InvalidInputError(
                        f"learner {name!r}: param {f.name!r}={params[f.name]!r} is not a {f.type}"
                    ) from None
        return cls(**values)


def _holdout(path: str) -> tuple[np.ndarray, np.ndarray] | None:
    if not path:
        return None
    with np.load(path) as data:
        return np.asarray(data["x"], dtype=np.float32), np.asarray(data["y"], dtype=np.int64)


def _ort_predict(onnx_model: bytes, input_name: str, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(onnx_model, providers=["CPUExecutionProvider"])
    return np.asarray(session.run(["label"], {input_name: x.astype(np.float32)})[0])


Persist = Callable[["LearnerSlot"], Awaitable[None]]


class LearnerSlot:
    """State of one learner inside the hub; mutated only under `lock` (persist, then swap)."""

    def __init__(self, config: LearnerConfig) -> None:
        self.config = config
        self.model = SoftmaxRegression.zeros(
            config.n_features,
            config.n_classes,
            lr=config.lr,
            l2=config.l2,
            input_scale=config.input_scale,
        )
        self.history: list[dict[str, Any]] = []
        self.deployed_version = ""
        self.deployed_accuracy = 0.0
        self.deployed_model: SoftmaxRegression | None = None
        self.standby_version = ""
        self.standby_model: SoftmaxRegression | None = None
        self.next_version = 1
        self.last_export_updates = 0
        self.lock = asyncio.Lock()
        self.rollout_lock = asyncio.Lock()
        self.rollout_queued = False  # a rollout task is scheduled and has not snapshotted yet
        self.published = False  # stored in KV (so every orchestrator can apply its labels)
        self.holdout = _holdout(config.holdout_path)
        self.live: deque[tuple[bool, bool]] = deque(maxlen=max(1, config.live_window))

    # -- persistence ------------------------------------------------------------------------
    def to_json(self, model: SoftmaxRegression | None = None) -> dict[str, Any]:
        return {
            "config": asdict(self.config),
            "model": (model or self.model).to_json(),
            "history": self.history[-MAX_HISTORY:],
            "deployed_version": self.deployed_version,
            "deployed_accuracy": self.deployed_accuracy,
            "deployed_model": self.deployed_model.to_json() if self.deployed_model else None,
            "standby_version": self.standby_version,
            "standby_model": self.standby_model.to_json() if self.standby_model else None,
            "next_version": self.next_version,
            "last_export_updates": self.last_export_updates,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> LearnerSlot:
        config = LearnerConfig(**data["config"])
        slot = cls(config)
        slot.model = SoftmaxRegression.from_json(data["model"])
        slot.history = list(data.get("history", []))[-MAX_HISTORY:]
        slot.deployed_version = str(data.get("deployed_version", ""))
        slot.deployed_accuracy = float(data.get("deployed_accuracy", 0.0))
        if data.get("deployed_model"):
            slot.deployed_model = SoftmaxRegression.from_json(data["deployed_model"])
        slot.standby_version = str(data.get("standby_version", ""))
        if data.get("standby_model"):
            slot.standby_model = SoftmaxRegression.from_json(data["standby_model"])
        slot.next_version = int(data.get("next_version", 1))
        slot.last_export_updates = int(data.get("last_export_updates", 0))
        slot.published = True
        return slot

    def adopt(self, other: LearnerSlot) -> None:
        """Take `other`'s learned state (weights, history, versions), keeping our locks."""
        for name, value in vars(other).items():
            if name not in ("lock", "rollout_lock", "rollout_queued"):
                setattr(self, name, value)

    def adopt_versions(self, data: Mapping[str, Any]) -> None:
        """After a lost CAS while resetting: take the stored version bookkeeping, keep the
        fresh weights."""
        model = self.model
        self.adopt(LearnerSlot.from_json(data))
        self.model = model

    # -- learning ---------------------------------------------------------------------------
    def check(self, features: Any) -> np.ndarray:
        return self.model.check_features(features, where=f"learner {self.config.name!r}: ")

    def holdout_accuracy(self, model: SoftmaxRegression | None = None) -> float:
        if self.holdout is None:
            return float("nan")
        return (model or self.model).accuracy(*self.holdout)

    def rollout_due(self) -> bool:
        every = self.config.export_every
        return every > 0 and self.model.updates - self.last_export_updates >= every

    def score_live(self, x: np.ndarray, label: int) -> bool:
        """Record how deployed and standby did on (x, label); True when it is time to roll back."""
        if self.deployed_model is None or self.standby_model is None:
            return False
        y = np.full(x.shape[0], label)
        deployed_ok = bool(np.all(self.deployed_model.predict(x) == y))
        standby_ok = bool(np.all(self.standby_model.predict(x) == y))
        self.live.append((deployed_ok, standby_ok))
        if len(self.live) < self.live.maxlen:  # type: ignore[operator]
            return False
        deployed = sum(d for d, _ in self.live) / len(self.live)
        standby = sum(s for _, s in self.live) / len(self.live)
        return deployed < standby - self.config.regression_tolerance

    async def rollout(
        self, deployer: Deployer | None, persist: Persist, *, only_if_due: bool = False
    ) -> dict[str, Any] | None:
        """One export/validate/deploy cycle (module docstring); returns the history entry
        (None when `only_if_due` and an earlier cycle already took these updates)."""
        async with self.rollout_lock:
            async with self.lock:
                self.rollout_queued = False
                if only_if_due and not self.rollout_due():
                    return None
                candidate = self.model
                version = f"v{self.next_version}"
                self.next_version += 1
                self.last_export_updates = candidate.updates
                await persist(self)  # the version name is taken even if we crash from here
            accuracy = self.holdout_accuracy(candidate)
            entry: dict[str, Any] = {
                "version": version,
                "updates": candidate.updates,
                "holdout_accuracy": accuracy,
                "status": "rejected",
                "reason": "",
            }
            onnx_model = export_onnx(candidate, self.config.input_name)
            if self.holdout is not None:
                x, _ = self.holdout
                ort_labels = await asyncio.to_thread(
                    _ort_predict, onnx_model, self.config.input_name, x
                )
                agreement = float(np.mean(ort_labels == candidate.predict(x)))
                entry["onnx_agreement"] = agreement
                floor = self.deployed_accuracy - self.config.regression_tolerance
                if accuracy < self.config.min_accuracy:
                    entry["reason"] = (
                        f"holdout accuracy {accuracy:.3f} < {self.config.min_accuracy}"
                    )
                elif self.deployed_version and accuracy < floor:
                    entry["reason"] = (
                        f"holdout accuracy {accuracy:.3f} regresses from "
                        f"{self.deployed_version} ({self.deployed_accuracy:.3f})"
                    )
                elif agreement < 0.99:
                    entry["reason"] = f"onnx/numpy agreement {agreement:.3f} < 0.99"
            if deployer is None and not entry["reason"]:
                entry["reason"] = "no deployer configured"
            if entry["reason"]:
                log.info(
                    "learner %s: %s not deployed: %s", self.config.name, version, entry["reason"]
                )
                async with self.lock:
                    self.history.append(entry)
                    await persist(self)
                return entry
            assert deployer is not None
            service = self.config.service
            try:
                await deployer.deploy(service, version, onnx_model)
                await deployer.set_traffic(service, {version: 1.0})
            except Exception as exc:
                entry["status"] = "failed"
                entry["reason"] = f"deploy failed: {exc}"
                log.warning("learner %s: deploying %s failed: %s", self.config.name, version, exc)
                async with self.lock:
                    self.history.append(entry)
                    await persist(self)
                await deployer.retire(service, version)
                return entry
            retired = self.standby_version
            async with self.lock:
                for item in self.history:
                    if item["version"] == self.deployed_version:
                        item["status"] = "standby"
                    elif item["version"] == retired:
                        item["status"] = "retired"
                entry["status"] = "deployed"
                self.history.append(entry)
                self.standby_version, self.standby_model = (
                    self.deployed_version,
                    self.deployed_model,
                )
                self.deployed_version, self.deployed_model = version, candidate
                self.deployed_accuracy = accuracy
                self.live.clear()
                await persist(self)
            if retired:
                await deployer.retire(service, retired)
            log.info(
                "learner %s: deployed %s (holdout accuracy %.3f, %d updates)",
                self.config.name,
                version,
                accuracy,
                candidate.updates,
            )
            return entry

    async def redeploy(self, deployer: Deployer) -> None:
        """Start the deployed version again (after an orchestrator restart) and point traffic
        at it; its weights come from the persisted document."""
        if not self.deployed_version or self.deployed_model is None:
            return
        async with self.rollout_lock:
            service, version = self.config.service, self.deployed_version
            onnx_model = export_onnx(self.deployed_model, self.config.input_name)
            await deployer.deploy(service, version, onnx_model)
            await deployer.set_traffic(service, {version: 1.0})
            log.info("learner %s: redeployed %s after a restart", self.config.name, version)

    async def rollback(self, deployer: Deployer, persist: Persist, reason: str) -> None:
        """Send traffic back to the standby version and retire the deployed one."""
        async with self.rollout_lock:
            if not self.standby_version or self.standby_model is None:
                return
            service = self.config.service
            bad = self.deployed_version
            await deployer.set_traffic(service, {self.standby_version: 1.0})
            async with self.lock:
                for item in self.history:
                    if item["version"] == bad:
                        item["status"] = "rolled_back"
                        item["reason"] = reason
                    elif item["version"] == self.standby_version:
                        item["status"] = "deployed"
                self.deployed_version, self.deployed_model = (
                    self.standby_version,
                    self.standby_model,
                )
                self.deployed_accuracy = self.holdout_accuracy(self.deployed_model)
                self.standby_version, self.standby_model = "", None
                self.live.clear()
                await persist(self)
            await deployer.retire(service, bad)
            log.warning("learner %s: rolled back %s: %s", self.config.name, bad, reason)
