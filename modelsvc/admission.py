"""Admission control of a model replica: the first thing Infer, ModelInfer and every
InferStream item do, before any tensor is decoded, validated or queued.

Contract (limits from `AdmissionConfig`, 0 = that limit is off):

- **Admit or refuse at once.** A request of `rows` rows is admitted when, counting it,
  in-flight requests <= ``max_in_flight_requests``, in-flight rows <= ``max_in_flight_rows``
  and its client's in-flight requests <= ``max_client_in_flight_requests``. Otherwise
  `admit` raises OverloadedError (RESOURCE_EXHAUSTED) naming the limit, with
  ``retry_pushback_ms`` (the ``grpc-retry-pushback-ms`` trailer on unary calls, the in-band
  Status on stream items). Nothing waits: a refusal costs a few integer compares.
- **In flight** means admitted and not yet released: queued in the batcher, running, or
  having its response built. Every admitted request is released exactly once, whatever its
  outcome (`release` with the same rows and client).
- **Cheap when off**: callers read a request's rows only while `counts_rows` (else pass 1)
  and its client key only while `per_client` (else pass "").
- **Clients** are keyed by the ``client_id_metadata`` header when configured and sent, else by
  the transport peer (``ipv4:127.0.0.1:51234``: one key per connection). Keys are only
  computed while a per-client limit is on; a client's entry is dropped when it has nothing in
  flight, so the table holds at most ``max_in_flight_requests`` keys.
- Single-threaded: called on the event loop only (no locks).
"""

from __future__ import annotations

from typing import NoReturn

from meshserve.errors import OverloadedError
from meshserve.modelsvc.config import AdmissionConfig

__all__ = ["Admission"]


class Admission:
    """In-flight counters of one replica, shared by its servicers."""

    __slots__ = (
        "_by_client", "_config", "_pushback_ms", "_requests", "_rows", "counts_rows",
        "per_client", "rejected",
    )  # fmt: skip

    def __init__(self, config: AdmissionConfig, pushback_ms: int) -> None:
        self._config = config
        self._pushback_ms = pushback_ms
        self._requests = 0
        self._rows = 0
        self._by_client: dict[str, int] = {}
        self.rejected = 0
        # What callers need to compute per request (plain attributes: read on the hot path).
        self.per_client = config.max_client_in_flight_requests > 0  # pass a client key
        self.counts_rows = config.max_in_flight_rows > 0  # pass the request's rows (else 1)

    @property
    def config(self) -> AdmissionConfig:
        return self._config

    @property
    def in_flight_requests(self) -> int:
        return self._requests

    @property
    def in_flight_rows(self) -> int:
        return self._rows

    def admit(self, rows: int, client: str = "") -> None:
        """Count one request of `rows` rows in, or raise OverloadedError naming the limit."""
        config = self._config
        limit = config.max_in_flight_requests
        if limit and self._requests >= limit:
            self._refuse(f"{limit} requests in flight (max_in_flight_requests)")
        limit = config.max_in_flight_rows
        if limit and self._rows + rows > limit and self._rows:
            self._refuse(f"{self._rows} of {limit} rows in flight (max_in_flight_rows)")
        limit = config.max_client_in_flight_requests
        if limit and client:
            held = self._by_client.get(client, 0)
            if held >= limit:
                self._refuse(
                    f"{limit} requests of this client in flight (max_client_in_flight_requests)"
                )
            self._by_client[client] = held + 1
        self._requests += 1
        self._rows += rows

    def release(self, rows: int, client: str = "") -> None:
        """Count one admitted request out (same `rows` and `client` as its `admit`)."""
        self._requests -= 1
        self._rows -= rows
        if client and self._config.max_client_in_flight_requests:
            held = self._by_client[client] - 1
            if held:
                self._by_client[client] = held
            else:
                del self._by_client[client]

    def _refuse(self, what: str) -> NoReturn:
        self.rejected += 1
        raise OverloadedError(
            f"replica overloaded: {what}; retry later or elsewhere",
            retry_pushback_ms=self._pushback_ms,
        )
