"""The orchestrator -> model data path: ``MeshCaller`` implements ``ModelCaller``.

Modules: ``config`` (frozen settings), ``policy`` (picker policies), ``replica`` (the only thing
touching a channel), ``ejection`` (outlier state), ``budget`` (retry budget), ``router`` (one
model's replica set, retries, draining), ``batching`` (client-side micro-batches), ``stream``
(bidi InferStream sessions), ``faults`` (fault injection), ``metrics``, ``mesh`` (MeshCaller).
"""

from meshserve.orchestrator.datapath.config import (
    BatchConfig,
    DataPathConfig,
    EjectionConfig,
    ModelPathConfig,
    RetryConfig,
)
from meshserve.orchestrator.datapath.mesh import MeshCaller

__all__ = [
    "BatchConfig",
    "DataPathConfig",
    "EjectionConfig",
    "MeshCaller",
    "ModelPathConfig",
    "RetryConfig",
]
