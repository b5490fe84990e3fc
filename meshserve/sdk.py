"""Moved to ``meshserve.clients.sdk`` (also ``from meshserve.clients import MeshServeClient``).

This alias keeps ``from meshserve.sdk import MeshServeClient`` working through the 0.x releases;
it warns once per process.
"""

import warnings

from meshserve.clients.sdk import ExecuteResult, MeshServeClient

__all__ = ["ExecuteResult", "MeshServeClient"]

warnings.warn(
    "meshserve.sdk moved to meshserve.clients.sdk (from meshserve.clients import MeshServeClient)",
    DeprecationWarning,
    stacklevel=2,
)
