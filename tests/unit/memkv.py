"""An in-memory stand-in for meshserve.registry.KV (get/put with CAS, list), for unit tests of the
learning hub *above* the KV interface. Integration tests use the real Consul agent."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Entry:
    key: str
    value: bytes
    modify_index: int


class MemoryKV:
    def __init__(self) -> None:
        self.data: dict[str, Entry] = {}
        self.index = 0
        self.fail_next = False
        self.puts = 0

    async def get(self, key: str) -> Entry | None:
        return self.data.get(key)

    async def put(self, key: str, value: bytes | str, cas: int | None = None) -> bool:
        if self.fail_next:
            self.fail_next = False
            raise ConnectionError("consul unreachable")
        current = self.data.get(key)
        if cas is not None and (current.modify_index if current else 0) != cas:
            return False
        self.index += 1
        self.puts += 1
        data = value.encode() if isinstance(value, str) else bytes(value)
        self.data[key] = Entry(key, data, self.index)
        return True

    async def list(self, prefix: str) -> list[Entry]:
        return [e for k, e in sorted(self.data.items()) if k.startswith(prefix)]
