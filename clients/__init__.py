"""meshserve: serve composed ML models as a typed gRPC mesh with a central orchestrator.

The root package is the client side: generated stubs (``meshserve.v1``), the SDK
(``meshserve.sdk``), tensor conversion (``meshserve.tensors``), errors and the CLI.
Servers live in ``meshserve.modelsvc``, ``meshserve.orchestrator`` and ``meshserve.registry``.
"""

__version__ = "0.1.0"
