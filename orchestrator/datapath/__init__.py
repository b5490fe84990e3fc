"""The orchestrator -> model data path: ``MeshCaller`` implements ``ModelCaller``.

Modules: ``config`` (frozen settings), ``policy`` (the picker policy table), ``transport`` (the
transport table: stream, unary), ``table`` (the named-table type of both), ``replica`` (the only
thing touching a channel; owns one transport), ``ejection`` (outlier state), ``budget`` (retry
budget), ``attempt`` (failure classes, retry policy), ``latency`` (latency history),
``hedge`` (hedged attempts), ``router`` (one model's replica set, picking, retries, hedging,
draining), ``batching``
(client-side micro-batches), ``stream`` (bidi InferStream sessions), ``faults`` (fault
injection, a transport wrapper), ``metrics``, ``mesh`` (MeshCaller).
"""

from meshserve.orchestrator.datapath.config import (
    AttemptTimeoutConfig,
    BatchConfig,
    DataPathConfig,
    EjectionConfig,
    HedgeConfig,
    ModelPathConfig,
    RetryConfig,
)
from meshserve.orchestrator.datapath.mesh import MeshCaller
from meshserve.orchestrator.datapath.policy import CallInfo, register_policy
from meshserve.orchestrator.datapath.transport import register_transport

__all__ = [
    "AttemptTimeoutConfig",
    "BatchConfig",
    "CallInfo",
    "DataPathConfig",
    "EjectionConfig",
    "HedgeConfig",
    "MeshCaller",
    "ModelPathConfig",
    "RetryConfig",
    "register_policy",
    "register_transport",
]
