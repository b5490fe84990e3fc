"""An in-memory stand-in for meshserve.registry.KV (get/put with CAS, transact, delete, list),
for unit tests of the learning hub *above* the KV interface. Integration tests use the real
Consul agent."""

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

    async def transact(self, ops: list) -> list[Entry] | None:
        if self.fail_next:
            self.fail_next = False
            raise ConnectionError("consul unreachable")
        for op in ops:
            current = self.data.get(op.key)
            if op.verb == "cas" and (current.modify_index if current else 0) != op.index:
                return None
        self.index += 1
        self.puts += 1
        for op in ops:
            self.data[op.key] = Entry(op.key, bytes(op.value), self.index)
        return [self.data[op.key] for op in ops]

    async def delete(self, key: str, recurse: bool = False) -> bool:
        for k in [k for k in self.data if k == key or (recurse and k.startswith(key))]:
            del self.data[k]
        return True

    async def list(self, prefix: str) -> list[Entry]:
        return [e for k, e in sorted(self.data.items()) if k.startswith(prefix)]
