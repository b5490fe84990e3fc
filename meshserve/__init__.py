"""meshserve: serve composed ML models as a typed gRPC mesh with a central orchestrator.

One layout rule: ``meshserve.X`` lives in the folder ``X/``. This folder is the shared kernel
every process uses: the error tree and its status mapping (``meshserve.errors``,
``meshserve.grpc_errors``), tensors (``meshserve.tensors``), TLS (``meshserve.tls``), telemetry
(``meshserve.telemetry``), the process edge (``meshserve.serving``) and the stubs generated from
proto/ (``meshserve.v1``). Its subpackages are the parts: ``meshserve.clients`` (SDK, CLI, local
mesh), ``meshserve.registry`` (Consul), ``meshserve.modelsvc`` (model replicas) and
``meshserve.orchestrator``.
"""

__version__ = "0.1.0"
