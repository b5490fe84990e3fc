"""A named table of one extension axis (picker policies, transports): name -> class.

Each axis keeps one ``Table``; its module documents the contract a registered class must meet
and exposes a public ``register_*`` function. Lookups of unknown names fail with a message that
lists the known ones, the way config errors name what was expected.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Generic, TypeVar

__all__ = ["Table"]

T = TypeVar("T")


class Table(Generic[T]):
    """Names of one `kind` ("picker policy", "transport") mapped to their classes."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str, entry: T) -> None:
        """Add `entry` under `name`; a name already taken by another entry is refused."""
        if not name or not name.isidentifier():
            raise ValueError(f"{self.kind} name {name!r}: expected an identifier")
        current = self._entries.get(name)
        if current is not None and current is not entry:
            raise ValueError(f"{self.kind} {name!r} is already registered ({current!r})")
        self._entries[name] = entry

    def unregister(self, name: str) -> None:
        """Remove `name` (tests that register a temporary entry)."""
        self._entries.pop(name, None)

    def get(self, name: str) -> T:
        """The entry of `name`; ValueError naming the known ones when there is none."""
        entry = self._entries.get(name)
        if entry is None:
            raise ValueError(f"unknown {self.kind} {name!r} (expected {self.expected()})")
        return entry

    def expected(self) -> str:
        """The known names for a message: "'a' or 'b'", "'a', 'b' or 'c'"."""
        names = [repr(n) for n in sorted(self._entries)]
        if len(names) < 2:
            return names[0] if names else "none registered"
        return ", ".join(names[:-1]) + " or " + names[-1]

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._entries))
