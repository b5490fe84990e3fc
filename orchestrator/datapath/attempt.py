"""What the router needs to know about one failed attempt against one replica.

A failed attempt is the ``meshserve.errors`` class for its status, created once where the
failure is seen (``grpc_errors.from_rpc_error`` for a failed call, ``error_from_status`` for a
stream item, ``error_for_status`` for a broken stream or an injected fault, with ``reason``
naming why). The router adds ``model``/``replica`` to it and raises that same error when it
stops retrying. Whether it counts against the replica is decided here.
"""

from __future__ import annotations

import grpc

from meshserve.errors import MeshError

__all__ = ["REPLICA_FAULT_CODES", "is_replica_fault"]

# Codes that say something about the replica (count toward outlier ejection).
REPLICA_FAULT_CODES = frozenset(
    {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN}
)


def is_replica_fault(err: MeshError) -> bool:
    """Does this failure count against the replica (not the request)?"""
    return err.code in REPLICA_FAULT_CODES
