"""A Redis feature store for ``features.lookup``: pipelined multi-key reads, one documented layout.

Key layout (what an offline job writes, what the orchestrator reads)::

    HASH  <prefix><entity>          e.g. "fraud:user:1042"
      field <field>                 default "vector": the feature vector as little-endian
                                    float32 bytes, exactly dim * 4 of them
                                    (numpy: vec.astype("<f4").tobytes())
      field "ts"                    optional: when the vector was computed (unix seconds, text;
                                    not read by meshserve, for the writer's own bookkeeping)

One hash per entity lets several feature views share the entity key (one field each). A batch of
keys is read with one pipelined round trip of ``HGET`` (not ``MGET``/``HMGET`` across keys, so it
also works where keys hash to different cluster slots). Feast's Redis online store uses another
layout (a serialized ``EntityKeyProto`` as key, murmur3-hashed feature names as fields, protobuf
``ValueProto`` values); reading it needs Feast's protos and is not done here.

Failures: the server unreachable or timing out (after redis-py's single retry on a fresh
connection) -> UnavailableError naming the source (never the URL, which may hold a password);
the next lookup reconnects. A stored value of the wrong size -> DataLossError naming the key.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence

import numpy as np
import redis.asyncio as aioredis
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from meshserve.errors import DataLossError, DeadlineExceededError, UnavailableError

__all__ = ["RedisFeatureBackend", "write_redis_features"]

log = logging.getLogger(__name__)


class RedisFeatureBackend:
    """Vectors of `dim` float32 in hashes ``<prefix><entity>``, field `field` (module docstring).

    `url` is a redis-py URL (``redis://[:password@]host:port/db``, ``unix:///path.sock``);
    `source` says where it came from, for messages.
    """

    store = "redis"

    def __init__(
        self,
        url: str,
        *,
        prefix: str,
        dim: int,
        field: str = "vector",
        source: str = "redis",
        timeout_s: float = 1.0,
    ) -> None:
        self.dim = dim
        self.prefix = prefix
        self.field = field
        self.source = source
        self._client = aioredis.Redis.from_url(
            url,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            retry=Retry(NoBackoff(), 1),
            retry_on_error=[RedisConnectionError, RedisTimeoutError, OSError],
        )
        pool = self._client.connection_pool.connection_kwargs
        self.server_address = str(pool.get("host") or pool.get("path") or "")
        self.server_port = pool.get("port")

    async def fetch_async(
        self, keys: Sequence[str], deadline: float | None = None
    ) -> dict[str, np.ndarray]:
        """Vectors of the keys that exist, in one pipelined round trip."""
        left = None if deadline is None else deadline - time.monotonic()
        if left is not None and left <= 0:
            raise DeadlineExceededError("feature store: the request deadline passed")
        try:
            async with asyncio.timeout(left):
                async with self._client.pipeline(transaction=False) as pipe:
                    for key in keys:
                        pipe.hget(self.prefix + key, self.field)
                    values = await pipe.execute()
        except TimeoutError:
            raise DeadlineExceededError(
                f"feature store ({self.source}) did not answer before the request deadline"
            ) from None
        except (RedisError, OSError) as exc:
            raise UnavailableError(
                f"feature store Redis ({self.source}, {self.server_address}) unavailable: "
                f"{type(exc).__name__}: {str(exc)[:200]}"
            ) from None
        out: dict[str, np.ndarray] = {}
        for key, raw in zip(keys, values, strict=True):
            if raw is None:
                continue
            if len(raw) != self.dim * 4:
                raise DataLossError(
                    f"feature store ({self.source}): {self.prefix}{key} field {self.field!r} has "
                    f"{len(raw)} bytes; expected dim {self.dim} x 4 (little-endian float32)"
                )
            out[key] = np.frombuffer(raw, dtype="<f4").astype(np.float32, copy=False)
        return out

    async def close(self) -> None:
        """Close the connection pool."""
        await self._client.aclose()


async def write_redis_features(
    url: str, prefix: str, vectors: Mapping[str, np.ndarray], *, field: str = "vector"
) -> None:
    """Write `vectors` in the layout above (tooling, examples and tests), pipelined."""
    client = aioredis.Redis.from_url(url)
    try:
        async with client.pipeline(transaction=False) as pipe:
            for key, vector in vectors.items():
                pipe.hset(prefix + key, field, np.asarray(vector, dtype="<f4").tobytes())
            await pipe.execute()
    finally:
        await client.aclose()
