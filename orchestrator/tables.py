"""One table per extension axis: step kinds, aggregations, picker policies, transports.

Every axis is a ``Table``: a name -> entry map with one way to add an entry (``register``) and
one way to find one (``get``). Each axis's module documents the contract its entries meet and
exposes a public ``register_*`` function; config and plans are validated against the table
where they are read, so an unknown name fails there with a message listing the known ones.

Rules shared by every axis: a name is a Python identifier; a name already taken is refused
unless ``replace=True``; entries registered ``builtin=True`` (what meshserve ships) can be
neither replaced nor removed; ``reserved`` names are never registered. Every refusal is an
InvalidInputError naming the axis and the name.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Generic, TypeVar

from meshserve.errors import InvalidInputError

__all__ = ["Table"]

T = TypeVar("T")


class Table(Generic[T]):
    """The entries of one extension axis, `kind` ("step kind", "picker policy", ...)."""

    def __init__(self, kind: str, *, reserved: Iterable[str] = ()) -> None:
        self.kind = kind
        self._reserved = frozenset(reserved)
        self._entries: dict[str, T] = {}
        self._builtin: set[str] = set()

    def register(self, name: str, entry: T, *, replace: bool = False, builtin: bool = False) -> T:
        """Add `entry` under `name` (see the module docstring for the rules); returns `entry`."""
        if not name or not name.isidentifier() or name in self._reserved:
            other = f" other than {_listed(sorted(self._reserved))}" if self._reserved else ""
            raise InvalidInputError(f"{self.kind} name {name!r} must be an identifier{other}")
        if name in self._builtin:
            raise InvalidInputError(f"{self.kind} {name!r} is built-in: it cannot be replaced")
        current = self._entries.get(name)
        if current is not None and current is not entry and not replace:
            raise InvalidInputError(f"{self.kind} {name!r} is already registered ({current!r})")
        self._entries[name] = entry
        if builtin:
            self._builtin.add(name)
        return entry

    def unregister(self, name: str) -> None:
        """Remove `name` (tests and plugins that register a temporary entry)."""
        if name in self._builtin:
            raise InvalidInputError(f"{self.kind} {name!r} is built in: it cannot be removed")
        self._entries.pop(name, None)

    def get(self, name: str) -> T:
        """The entry of `name`; InvalidInputError naming the known ones when there is none."""
        entry = self._entries.get(name)
        if entry is None:
            raise InvalidInputError(f"unknown {self.kind} {name!r} (expected {self.expected()})")
        return entry

    def find(self, name: str) -> T | None:
        """The entry of `name`, or None."""
        return self._entries.get(name)

    def is_builtin(self, name: str) -> bool:
        return name in self._builtin

    def expected(self) -> str:
        """The known names for a message: "'a' or 'b'", "'a', 'b' or 'c'"."""
        return _listed(sorted(self._entries))

    def items(self) -> Iterator[tuple[str, T]]:
        return iter(sorted(self._entries.items()))

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._entries))

    def __len__(self) -> int:
        return len(self._entries)


def _listed(names: list[str]) -> str:
    quoted = [repr(n) for n in names]
    if len(quoted) < 2:
        return quoted[0] if quoted else "none registered"
    return ", ".join(quoted[:-1]) + " or " + quoted[-1]
