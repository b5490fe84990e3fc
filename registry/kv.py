"""Consul KV with check-and-set, prefix listing, blocking-query watches and chunked values.

Consul refuses values over 512 KiB. `put_large` splits a value into chunks under
``<key>/chunks/<i>`` and then writes a small JSON manifest at ``<key>`` (count, size, sha256)
with check-and-set; `get_large` reads the manifest and all chunks (one consistent recursive
read) and verifies the checksum, raising KVIntegrityError when they do not match.
"""

from __future__ import annotations

import asyncio
import base64
import builtins
import hashlib
import json
import logging
import random
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from consul.exceptions import ClientError as ConsulClientError

from meshserve.errors import CheckAndSetError, InvalidInputError
from meshserve.registry.blocking import BlockingOptions, BlockingQuery, Clock, Sleep
from meshserve.registry.client import ConsulClient, duration, parse_index
from meshserve.registry.config import ConsulConfig
from meshserve.registry.errors import KVIntegrityError

__all__ = ["CONSUL_MAX_VALUE_BYTES", "KV", "KVEntry", "TxnOp"]

log = logging.getLogger(__name__)

CONSUL_MAX_VALUE_BYTES = 512 * 1024
CHUNK_BYTES = CONSUL_MAX_VALUE_BYTES - 1024
MANIFEST_FORMAT = "meshserve-chunked-v1"
_READ_RETRIES = 3


@dataclass(frozen=True)
class KVEntry:
    """One key. `modify_index` is what `cas=` expects; `session` holds a lock when set."""

    key: str
    value: bytes
    modify_index: int
    create_index: int = 0
    lock_index: int = 0
    flags: int = 0
    session: str = ""

    @classmethod
    def from_consul(cls, item: dict[str, Any]) -> KVEntry:
        return cls(
            key=str(item["Key"]),
            value=item.get("Value") or b"",
            modify_index=int(item.get("ModifyIndex", 0)),
            create_index=int(item.get("CreateIndex", 0)),
            lock_index=int(item.get("LockIndex", 0)),
            flags=int(item.get("Flags", 0)),
            session=str(item.get("Session") or ""),
        )


@dataclass(frozen=True)
class TxnOp:
    """One operation of `KV.transact`: ``verb`` is Consul's ("cas": write `value` only while the
    key's ModifyIndex is `index`, 0 meaning "only create"; "get"; "delete")."""

    verb: str
    key: str
    value: bytes = b""
    index: int = 0

    def to_consul(self) -> dict[str, Any]:
        op: dict[str, Any] = {"Verb": self.verb, "Key": self.key}
        if self.verb == "cas":
            op["Value"] = base64.b64encode(self.value).decode("ascii")
            op["Index"] = self.index
        return {"KV": op}


def _as_bytes(value: bytes | str) -> bytes:
    return value.encode() if isinstance(value, str) else bytes(value)


class KV:
    """Consul's key/value store for `config`. Use as ``async with KV(cfg) as kv`` or call
    `close()`. Values are bytes (str is UTF-8 encoded on write)."""

    def __init__(
        self,
        config: ConsulConfig,
        *,
        watch_options: BlockingOptions | None = None,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self._client = ConsulClient(config)
        self.watch_options = watch_options or BlockingOptions()
        self._clock = clock
        self._sleep = sleep
        self._rng = rng

    async def __aenter__(self) -> KV:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the HTTP session."""
        await self._client.close()

    async def get(self, key: str) -> KVEntry | None:
        """The entry at `key`, or None when it does not exist."""
        _check_key(key)
        _, item = await self._client.call(f"get key {key!r}", lambda c: c.kv.get(key))
        return KVEntry.from_consul(item) if item else None

    async def put(
        self, key: str, value: bytes | str, cas: int | None = None, *, strict: bool = False
    ) -> bool:
        """Write `value` at `key`; False when a check-and-set lost.

        `cas=None` writes unconditionally, `cas=0` only creates, `cas=N` only replaces
        ModifyIndex N. With `strict=True` a lost check-and-set raises CheckAndSetError.
        """
        _check_key(key)
        data = _as_bytes(value)
        if len(data) > CONSUL_MAX_VALUE_BYTES:
            raise InvalidInputError(
                f"value for key {key!r} is {len(data)} bytes; Consul takes at most "
                f"{CONSUL_MAX_VALUE_BYTES} (use KV.put_large for bigger values)"
            )
        ok = bool(
            await self._client.call(f"put key {key!r}", lambda c: c.kv.put(key, data, cas=cas))
        )
        if not ok and strict:
            raise CheckAndSetError(_cas_message(key, cas))
        return ok

    async def delete(
        self, key: str, cas: int | None = None, *, recurse: bool = False, strict: bool = False
    ) -> bool:
        """Delete `key` (every key under it with `recurse`); False when a check-and-set lost.

        With `cas=N` the key is deleted only while its ModifyIndex is N.
        """
        _check_key(key)
        ok = bool(
            await self._client.call(
                f"delete key {key!r}", lambda c: c.kv.delete(key, recurse=recurse, cas=cas)
            )
        )
        if not ok and strict:
            raise CheckAndSetError(_cas_message(key, cas))
        return ok

    async def transact(self, ops: builtins.list[TxnOp]) -> builtins.list[KVEntry] | None:
        """Apply `ops` atomically (Consul's /v1/txn); the entries the ops return (a "cas" returns
        its key with the new ModifyIndex), or None when a check failed and nothing was applied."""
        for op in ops:
            _check_key(op.key)
        payload = [op.to_consul() for op in ops]

        async def run(c: Any) -> Any:
            try:
                return await c.txn.put(payload)
            except ConsulClientError as exc:
                if str(exc).startswith("409"):  # rolled back: a check-and-set did not hold
                    return None
                raise

        result = await self._client.call(f"transaction on {ops[0].key!r}...", run)
        if result is None:
            return None
        return [KVEntry.from_consul(r["KV"]) for r in result.get("Results") or () if "KV" in r]

    async def list(self, prefix: str) -> builtins.list[KVEntry]:
        """Every entry whose key starts with `prefix`, sorted by key."""
        _, entries = await self._list(prefix, 0, 0.0)
        return entries

    async def watch(self, prefix: str) -> AsyncIterator[builtins.list[KVEntry]]:
        """Yield the entries under `prefix` now and after every change (blocking queries).

        Errors are retried with backoff and never end the iteration; stop it by breaking out
        of the loop or cancelling the task that iterates.
        """
        query: BlockingQuery[builtins.list[KVEntry]] = BlockingQuery(
            lambda index, wait_s: self._list(prefix, index, wait_s),
            self.watch_options,
            name=f"watch kv {prefix!r}",
            clock=self._clock,
            sleep=self._sleep,
            rng=self._rng,
        )
        async for entries in query:
            yield entries

    async def put_large(self, key: str, value: bytes, cas: int | None = None) -> int:
        """Write `value` of any size as chunks plus a manifest at `key`; returns chunk count.

        The manifest is written last with check-and-set (`cas` as in `put`); a lost race raises
        CheckAndSetError. Chunks left over from a longer previous value are deleted.
        """
        _check_key(key)
        data = bytes(value)
        chunks = [data[i : i + CHUNK_BYTES] for i in range(0, len(data), CHUNK_BYTES)] or [b""]
        for i, chunk in enumerate(chunks):
            await self.put(_chunk_key(key, i), chunk)
        manifest = json.dumps(
            {
                "format": MANIFEST_FORMAT,
                "chunks": len(chunks),
                "size": len(data),
                "sha256": hashlib.sha256(data).hexdigest(),
            },
            sort_keys=True,
        )
        if not await self.put(key, manifest, cas=cas):
            raise CheckAndSetError(_cas_message(key, cas))
        for entry in await self.list(f"{key}/chunks/"):
            suffix = entry.key.rsplit("/", 1)[-1]
            if suffix.isdigit() and int(suffix) >= len(chunks):
                await self.delete(entry.key, cas=entry.modify_index)
        return len(chunks)

    async def get_large(self, key: str) -> bytes | None:
        """The value written by `put_large` at `key` (None when absent), checksum verified.

        A read that races a writer is retried; a mismatch that persists raises
        KVIntegrityError naming what differs.
        """
        _check_key(key)
        problem = ""
        for _ in range(_READ_RETRIES):
            manifest_entry = await self.get(key)
            if manifest_entry is None:
                return None
            manifest = _parse_manifest(key, manifest_entry.value)
            chunks = {e.key: e.value for e in await self.list(f"{key}/chunks/")}
            data, problem = _assemble(key, manifest, chunks)
            if not problem:
                return data
            again = await self.get(key)
            if again is not None and again.modify_index == manifest_entry.modify_index:
                break  # no writer in between: the stored value itself is bad
        raise KVIntegrityError(f"large value at {key!r} is corrupt: {problem}")

    async def _list(
        self, prefix: str, index: int, wait_s: float
    ) -> tuple[int, builtins.list[KVEntry]]:
        wait = duration(wait_s) if wait_s else None
        returned, items = await self._client.call(
            f"list keys under {prefix!r}",
            lambda c: c.kv.get(prefix, index=index or None, wait=wait, recurse=True),
            timeout_s=self._client.blocking_timeout_s(wait_s),
        )
        entries = sorted((KVEntry.from_consul(i) for i in items or ()), key=lambda e: e.key)
        return parse_index(returned), entries


def _check_key(key: str) -> None:
    if not isinstance(key, str) or key.startswith("/"):
        raise InvalidInputError(f"KV key {key!r}: expected a string not starting with '/'")


def _chunk_key(key: str, i: int) -> str:
    return f"{key}/chunks/{i}"


def _cas_message(key: str, cas: int | None) -> str:
    if cas == 0:
        return f"key {key!r} already exists (check-and-set with cas=0 only creates)"
    return f"key {key!r} changed since ModifyIndex {cas} (check-and-set lost; re-read and retry)"


def _parse_manifest(key: str, raw: bytes) -> dict[str, Any]:
    try:
        manifest = json.loads(raw)
        if manifest.get("format") != MANIFEST_FORMAT:
            raise ValueError("format")
        int(manifest["chunks"]), int(manifest["size"]), str(manifest["sha256"])
    except (ValueError, TypeError, KeyError, AttributeError):
        raise KVIntegrityError(
            f"key {key!r} does not hold a large-value manifest (expected JSON with format "
            f"{MANIFEST_FORMAT!r}, chunks, size, sha256; was it written with KV.put_large?)"
        ) from None
    return dict(manifest)


def _assemble(key: str, manifest: dict[str, Any], chunks: dict[str, bytes]) -> tuple[bytes, str]:
    count = int(manifest["chunks"])
    missing = [i for i in range(count) if _chunk_key(key, i) not in chunks]
    if missing:
        return b"", f"manifest lists {count} chunks but chunks {missing[:5]} are missing"
    data = b"".join(chunks[_chunk_key(key, i)] for i in range(count))
    if len(data) != int(manifest["size"]):
        return b"", f"chunks hold {len(data)} bytes, manifest says {manifest['size']}"
    digest = hashlib.sha256(data).hexdigest()
    if digest != manifest["sha256"]:
        return b"", f"sha256 of chunks is {digest}, manifest says {manifest['sha256']}"
    return data, ""
