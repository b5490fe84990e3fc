"""Errors raised by meshserve.registry, each a leaf of meshserve's error tree."""

from __future__ import annotations

from meshserve.errors import CheckAndSetError, InternalError, UnavailableError

__all__ = ["CheckAndSetError", "KVIntegrityError", "RegistryUnavailableError"]


class RegistryUnavailableError(UnavailableError):
    """Consul could not be reached, timed out or answered with a server error."""


class KVIntegrityError(InternalError):
    """A chunked KV value does not match its manifest (count, size or sha256)."""
