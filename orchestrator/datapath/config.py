"""Frozen configuration of the orchestrator -> model data path.

Every knob carries its unit in its name. ``DataPathConfig`` holds the defaults for every model;
``DataPathConfig.models`` overrides them per model (``ModelPathConfig``). `load_datapath_config`
reads the same settings from a YAML or JSON file (``orchestrator serve --datapath-config``).
"""

from __future__ import annotations

import dataclasses
import json
import random
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import grpc
import yaml

from meshserve.errors import InvalidInputError
from meshserve.orchestrator.datapath.policy import POLICIES, make_policy
from meshserve.orchestrator.datapath.transport import TRANSPORTS
from meshserve.tls import ClientTLS

__all__ = [
    "AttemptTimeoutConfig",
    "BatchConfig",
    "DataPathConfig",
    "EjectionConfig",
    "HedgeConfig",
    "ModelPathConfig",
    "RetryConfig",
    "Transport",
    "datapath_config_from_mapping",
    "load_datapath_config",
]

Transport = str  # a name in transport.TRANSPORTS ("stream", "unary")


@dataclass(frozen=True)
class RetryConfig:
    """When and how a failed attempt is tried again on another replica.

    Retries only happen on `retry_codes` (grpc status names) or a broken stream, on a replica not
    tried yet by this call, while the call's deadline allows, and only when the retry budget has a
    token: each first attempt deposits `budget_ratio` tokens (so retries stay under ~20% of
    attempts), plus a floor of `budget_min_per_s` tokens per second, capped at `budget_max_tokens`.
    Backoff between attempts is full-jitter exponential, raised to the server's retry pushback.
    `retry_once_codes` (INTERNAL, UNKNOWN: the replica's fault, inference being idempotent) are
    retried at most once per call. A per-attempt timeout (``AttemptTimeoutConfig``) that fires
    is retried like a broken stream.
    """

    max_attempts: int = 3
    retry_codes: tuple[str, ...] = ("UNAVAILABLE", "RESOURCE_EXHAUSTED")
    retry_once_codes: tuple[str, ...] = ("INTERNAL", "UNKNOWN")
    backoff_base_s: float = 0.002
    backoff_max_s: float = 0.1
    budget_ratio: float = 0.2
    budget_min_per_s: float = 10.0
    budget_max_tokens: float = 100.0


@dataclass(frozen=True)
class EjectionConfig:
    """Outlier ejection: `consecutive_failures` in a row eject a replica for a back-off period
    (`base_ejection_s` doubled on every ejection in a row, capped at `max_ejection_s`); after it,
    one probe request is let through: success restores the replica, failure ejects it again.
    At most `max_ejected_fraction` of a model's replicas are ejected at once (never the last one).
    """

    consecutive_failures: int = 3
    base_ejection_s: float = 1.0
    max_ejection_s: float = 30.0
    max_ejected_fraction: float = 0.5
    # Latency sample recorded for a fast RESOURCE_EXHAUSTED: a penalty, not a fast success.
    overload_penalty_ms: float = 50.0


@dataclass(frozen=True)
class AttemptTimeoutConfig:
    """Per-attempt timeout derived from the model's latency history.

    Once the model has `DataPathConfig.latency_min_samples` successful attempts in its window,
    an attempt that may still be retried (another untried replica, attempts and a budget token
    left) gets min(remaining deadline, max(`floor_ms`, `p99_multiplier` x p99)); the last
    possible attempt always gets the whole remaining deadline. An attempt that times out counts
    against its replica (outlier ejection) and is retried elsewhere.
    """

    enabled: bool = True
    p99_multiplier: float = 3.0
    floor_ms: float = 250.0


@dataclass(frozen=True)
class HedgeConfig:
    """Hedged requests (gRFC A6 style) for idempotent calls (inference is).

    When an attempt has not answered after the hedging delay (`delay_ms`, or when 0 derived:
    max(`min_delay_ms`, p95 of the model's latency history)), one more attempt goes to another
    replica not tried by the call; the first good answer wins and the other is cancelled. A hedge
    takes a token from its own bucket (each call deposits `budget_ratio`, plus `budget_min_per_s`
    per second, capped at `budget_max_tokens`), so hedges never starve retries; it counts toward
    `RetryConfig.max_attempts` and never runs past the deadline. The timer is armed only when a
    hedge is possible (two or more candidates, a token, a delay shorter than the attempt's time).
    """

    enabled: bool = True
    delay_ms: float = 0.0
    min_delay_ms: float = 10.0
    budget_ratio: float = 0.1
    budget_min_per_s: float = 2.0
    budget_max_tokens: float = 20.0


@dataclass(frozen=True)
class BatchConfig:
    """Client-side micro-batching of concurrent calls to one model.

    A batch is sent when it reaches `max_batch_rows`, when its oldest call waited `max_wait_us`,
    or at once when fewer than `eager_batches_per_replica` x (ready replicas) batches of the model
    are in flight (an idle pipe gains nothing from waiting) - unless `linger` is on and calls
    keep arriving during batches' round trips: then a free pipe waits for company while calls
    keep coming (at most `max_wait_us`; see orchestrator/datapath/batching.py).
    `max_batch_rows` is also capped by the smallest `batch_max` that the replicas advertise in
    Consul meta.
    """

    enabled: bool = True
    max_batch_rows: int = 64
    max_wait_us: int = 2000
    eager_batches_per_replica: int = 1
    linger: bool = True


@dataclass(frozen=True)
class ModelPathConfig:
    """Per-model overrides (None keeps the DataPathConfig default).

    `policy_options` without `policy` apply to the default policy; a `policy` without
    `policy_options` starts from no options.
    """

    batch: BatchConfig | None = None
    transport: Transport | None = None
    timeout_s: float | None = None
    policy: str | None = None
    policy_options: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class DataPathConfig:
    """How the orchestrator calls models.

    transport: a name in ``transport.TRANSPORTS``: "stream" (long-lived bidi InferStream per
    endpoint) or "unary" (one Infer per batch). `policy`: a name in ``policy.POLICIES``: "p2c"
    (power of two choices) or "round_robin"; `policy_options` are passed to its constructor.
    `retry`, `attempt_timeout`, `hedge` and `ejection` are the resilience policy (docs/CONTRACTS.md,
    "Resilience policy"); `latency_window_samples` / `latency_min_samples` size the latency
    history that attempt timeouts and hedging derive from.
    """

    transport: Transport = "stream"
    policy: str = "p2c"
    policy_options: Mapping[str, Any] = field(default_factory=dict)
    default_timeout_s: float = 30.0
    discovery_timeout_s: float = 2.0
    stream_max_in_flight: int = 64
    latency_ewma_half_life_s: float = 1.0
    latency_idle_half_life_s: float = 10.0
    # Latency history of a model (successful attempts) for attempt timeouts and hedging.
    latency_window_samples: int = 256
    latency_min_samples: int = 20
    drain_close_grace_s: float = 30.0
    max_message_bytes: int = 64 * 1024 * 1024
    service_tag: str = "meshserve-model"
    retry: RetryConfig = field(default_factory=RetryConfig)
    ejection: EjectionConfig = field(default_factory=EjectionConfig)
    attempt_timeout: AttemptTimeoutConfig = field(default_factory=AttemptTimeoutConfig)
    hedge: HedgeConfig = field(default_factory=HedgeConfig)
    batch: BatchConfig = field(default_factory=BatchConfig)
    models: Mapping[str, ModelPathConfig] = field(default_factory=dict)
    tls: ClientTLS | None = None  # dial model replicas with TLS

    def __post_init__(self) -> None:
        problems = self._path_problems("", None)
        for model, override in self.models.items():
            problems.extend(self._path_problems(f"models[{model!r}].", override))
        for name in ("default_timeout_s", "discovery_timeout_s", "latency_ewma_half_life_s",
                     "latency_idle_half_life_s"):  # fmt: skip
            if not getattr(self, name) > 0:
                problems.append(f"{name}={getattr(self, name)} (expected > 0)")
        if self.stream_max_in_flight < 1:
            problems.append(f"stream_max_in_flight={self.stream_max_in_flight} (expected >= 1)")
        for label, batch in [("batch", self.batch)] + [
            (f"models[{m!r}].batch", o.batch) for m, o in self.models.items() if o.batch
        ]:
            if batch.max_batch_rows < 1:
                problems.append(f"{label}.max_batch_rows={batch.max_batch_rows} (expected >= 1)")
            if batch.max_wait_us < 0:
                problems.append(f"{label}.max_wait_us={batch.max_wait_us} (expected >= 0)")
        if self.retry.max_attempts < 1:
            problems.append(f"retry.max_attempts={self.retry.max_attempts} (expected >= 1)")
        problems.extend(self._resilience_problems())
        if self.ejection.consecutive_failures < 1:
            problems.append(
                f"ejection.consecutive_failures={self.ejection.consecutive_failures} "
                "(expected >= 1)"
            )
        if problems:
            raise ValueError("invalid DataPathConfig: " + "; ".join(problems))

    def _resilience_problems(self) -> list[str]:
        """Retry codes, latency history, attempt timeouts and hedging."""
        problems = []
        for name in ("retry_codes", "retry_once_codes"):
            for code in getattr(self.retry, name):
                if code not in grpc.StatusCode.__members__ or code == "OK":
                    problems.append(f"retry.{name}: {code!r} (expected a grpc status code name)")
        if self.latency_window_samples < 1:
            problems.append(f"latency_window_samples={self.latency_window_samples} (expected >= 1)")
        if not 1 <= self.latency_min_samples <= self.latency_window_samples:
            problems.append(
                f"latency_min_samples={self.latency_min_samples} "
                "(expected 1..latency_window_samples)"
            )
        at, hedge = self.attempt_timeout, self.hedge
        for label, value in (
            ("attempt_timeout.p99_multiplier", at.p99_multiplier),
            ("attempt_timeout.floor_ms", at.floor_ms),
            ("hedge.min_delay_ms", hedge.min_delay_ms),
        ):
            if not value > 0:
                problems.append(f"{label}={value} (expected > 0)")
        for label, value in (
            ("hedge.delay_ms", hedge.delay_ms),
            ("hedge.budget_ratio", hedge.budget_ratio),
            ("hedge.budget_min_per_s", hedge.budget_min_per_s),
            ("hedge.budget_max_tokens", hedge.budget_max_tokens),
        ):
            if not value >= 0:
                problems.append(f"{label}={value} (expected >= 0)")
        return problems

    def _path_problems(self, label: str, override: ModelPathConfig | None) -> list[str]:
        """Transport and policy of the defaults (`override` None) or of one model's override,
        checked against their tables; a policy's options by building one."""
        problems = []
        transport = self.transport if override is None else override.transport
        if transport is not None and transport not in TRANSPORTS:
            problems.append(f"{label}transport={transport!r} (expected {TRANSPORTS.expected()})")
        if override is None:
            name, options = self.policy, self.policy_options
        elif override.policy is None and override.policy_options is None:
            return problems  # the defaults, checked once
        else:
            name, options = self._policy_of(override)
        if name not in POLICIES:
            problems.append(f"{label}policy={name!r} (expected {POLICIES.expected()})")
        else:
            try:
                make_policy(name, options, random.Random(0))
            except (TypeError, ValueError) as exc:
                problems.append(f"{label}policy_options: {exc}")
        return problems

    def _policy_of(self, override: ModelPathConfig) -> tuple[str, Mapping[str, Any]]:
        if override.policy is not None:
            return override.policy, override.policy_options or {}
        if override.policy_options is not None:
            return self.policy, override.policy_options
        return self.policy, self.policy_options

    def policy_for(self, model: str) -> tuple[str, Mapping[str, Any]]:
        """(policy name, options) of `model`: its override, else the defaults."""
        override = self.models.get(model)
        if override is None:
            return self.policy, self.policy_options
        return self._policy_of(override)

    def batch_for(self, model: str) -> BatchConfig:
        override = self.models.get(model)
        return override.batch if override and override.batch else self.batch

    def transport_for(self, model: str) -> Transport:
        override = self.models.get(model)
        return override.transport if override and override.transport else self.transport

    def timeout_for(self, model: str) -> float:
        override = self.models.get(model)
        if override and override.timeout_s is not None:
            return override.timeout_s
        return self.default_timeout_s

    def with_batching(self, enabled: bool) -> DataPathConfig:
        """A copy with batching switched on/off for every model (benchmarks, tests)."""
        return replace(self, batch=replace(self.batch, enabled=enabled), models={})


# Set on the command line, not in the file: the request budget and the TLS credentials.
_FLAG_ONLY = {"default_timeout_s": "--default-timeout-s", "tls": "--model-tls-ca/-cert/-key"}
_NESTED: dict[str, type] = {
    "retry": RetryConfig,
    "ejection": EjectionConfig,
    "batch": BatchConfig,
    "attempt_timeout": AttemptTimeoutConfig,
    "hedge": HedgeConfig,
}


def _value(raw: Any, default: Any, where: str) -> Any:
    """`raw` checked against the type of the field's default (ints are accepted as floats)."""
    if isinstance(default, bool):
        ok = isinstance(raw, bool)
    elif isinstance(default, float):
        ok = isinstance(raw, int | float) and not isinstance(raw, bool)
        raw = float(raw) if ok else raw
    elif isinstance(default, int):
        ok = isinstance(raw, int) and not isinstance(raw, bool)
    elif isinstance(default, tuple):
        ok = isinstance(raw, list | tuple) and all(isinstance(v, str) for v in raw)
        raw = tuple(raw) if ok else raw
    elif isinstance(default, Mapping):
        ok = isinstance(raw, Mapping) and all(isinstance(k, str) for k in raw)
        raw = dict(raw) if ok else raw
    else:
        ok = isinstance(raw, str)
    if not ok:
        raise InvalidInputError(
            f"{where}: expected {type(default).__name__}, got {type(raw).__name__} ({raw!r})"
        )
    return raw


# Type samples of the fields whose default is None (per-model overrides).
_OPTIONAL_SAMPLES: dict[str, Any] = {
    "transport": "",
    "timeout_s": 0.0,
    "policy": "",
    "policy_options": {},
}


def _section(cls: type, raw: Any, where: str, skip: Mapping[str, str] | None = None) -> Any:
    if not isinstance(raw, Mapping):
        raise InvalidInputError(f"{where}: expected a mapping, got {type(raw).__name__}")
    skip = skip or {}
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name not in skip}
    kwargs: dict[str, Any] = {}
    for key, value in raw.items():
        name = f"{where}.{key}" if where else str(key)
        if key in skip:
            raise InvalidInputError(f"{name} is set on the command line ({skip[key]})")
        if key not in fields:
            raise InvalidInputError(f"unknown setting {name!r} (expected one of {sorted(fields)})")
        if key in _NESTED:
            kwargs[key] = _section(_NESTED[key], value, name)
        elif key == "models":
            if not isinstance(value, Mapping):
                raise InvalidInputError(f"{name}: expected a mapping of model name to settings")
            kwargs[key] = {
                str(m): _section(ModelPathConfig, v, f"{name}.{m}") for m, v in value.items()
            }
        else:
            f = fields[key]
            factory = f.default_factory
            default = f.default if factory is dataclasses.MISSING else factory()
            sample = _OPTIONAL_SAMPLES[key] if default is None else default
            kwargs[key] = _value(value, sample, name)
    return cls(**kwargs)


def datapath_config_from_mapping(values: Mapping[str, Any]) -> DataPathConfig:
    """A DataPathConfig from a nested mapping (a parsed file); every problem names its key.

    Raises InvalidInputError for unknown keys, wrong types and invalid values.
    """
    try:
        config: DataPathConfig = _section(DataPathConfig, values, "", _FLAG_ONLY)
    except (ValueError, TypeError) as exc:
        raise InvalidInputError(str(exc)) from exc
    return config


def load_datapath_config(path: str | Path) -> DataPathConfig:
    """Read data path settings from a YAML (or JSON) file; see `datapath_config_from_mapping`."""
    try:
        text = Path(path).read_text()
        data = json.loads(text) if str(path).endswith(".json") else yaml.safe_load(text)
    except (OSError, ValueError, yaml.YAMLError) as exc:
        raise InvalidInputError(f"datapath config {path}: {exc}") from exc
    try:
        return datapath_config_from_mapping(data or {})
    except InvalidInputError as exc:
        raise InvalidInputError(f"datapath config {path}: {exc.message}") from exc
