"""meshserve.clients: what users run and import to reach a mesh.

The SDK (``meshserve.clients.sdk.MeshServeClient``: numpy in, numpy out), the ``meshserve``
command line (``meshserve.clients.cli``) and its command groups, the local mesh
(``meshserve up`` / ``down`` / ``status`` / ``demo``) with its state file and the Consul dev-agent
launcher (``meshserve.clients.consul_agent``), and the container health probe.
"""

from meshserve.clients.sdk import ExecuteResult, MeshServeClient

__all__ = ["ExecuteResult", "MeshServeClient"]
