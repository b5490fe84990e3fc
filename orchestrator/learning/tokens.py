"""Feedback tokens: what a request's learning steps decided, signed so any orchestrator trusts it.

A token travels with the response (``ExecuteResponse.feedback_token``) and comes back with the
feedback (``FeedbackRequest.token``), so the orchestrator that applies the feedback needs no
memory of the request: not the one that served it, not one that survived a restart.

Wire format (version 1)::

    0x01 | key id (4 bytes) | payload (compact JSON, UTF-8) | HMAC-SHA256(key, everything before)

The payload holds the request id, the wall-clock issue time in milliseconds (the only clock two
processes share) and the records: ``["bandit", "plan/step", [context, arm]]`` (with a third
item, the feature list, for contextual policies) or
``["learner", name, {"shape": [...], "f64": base64}]``. The key id is the first 4 bytes of
sha256(key), so a token signed with a key this orchestrator lacks is told apart from a forged
one. Keys: the first signs, every key verifies (rotation: add the new key second, roll out,
swap the order, roll out, drop the old one).

A token is accepted while ``issued <= now + future_skew_s`` and ``now - issued <= retention_s``:
the retention window inside which feedback is applied exactly once (feedback.py keeps the
"applied" markers at least that long).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from meshserve.errors import InvalidInputError, NotFoundError
from meshserve.orchestrator.learning.decisions import Record

__all__ = ["Decisions", "TokenConfig", "TokenSigner"]

VERSION = 1
_MAC_BYTES = 32
_KEY_ID_BYTES = 4
_HEADER_BYTES = 1 + _KEY_ID_BYTES


@dataclass(frozen=True)
class TokenConfig:
    """`retention_s`: how long feedback for a request is accepted (and applied exactly once);
    `future_skew_s`: how far ahead of this host's clock an issuing host's clock may run;
    `max_token_bytes`: larger tokens are neither issued (the response carries none) nor read."""

    retention_s: float = 3600.0
    future_skew_s: float = 300.0
    max_token_bytes: int = 64 * 1024


@dataclass(frozen=True)
class Decisions:
    """Everything one request's learning steps decided or observed, and when (wall clock, s)."""

    request_id: str
    issued_s: float
    records: tuple[Record, ...]


def _key_id(key: bytes) -> bytes:
    return hashlib.sha256(key).digest()[:_KEY_ID_BYTES]


def _encode_value(record: Record) -> Any:
    if record.kind == "bandit":  # (context, arm), + features (contextual) or "personal"
        extra = record.value[2:]
        return [
            str(record.value[0]),
            str(record.value[1]),
            *[e if isinstance(e, str) else list(e) for e in extra],
        ]
    x = np.ascontiguousarray(record.value, dtype="<f8")
    return {"shape": list(x.shape), "f64": base64.b64encode(x.tobytes()).decode("ascii")}


def _decode_record(item: Any) -> Record:
    kind, key, value = item
    if kind == "bandit":
        if len(value) == 3:
            third = value[2] if isinstance(value[2], str) else tuple(float(v) for v in value[2])
            return Record("bandit", str(key), (str(value[0]), str(value[1]), third))
        context, arm = value
        return Record("bandit", str(key), (str(context), str(arm)))
    if kind == "learner":
        shape = tuple(int(n) for n in value["shape"])
        x = np.frombuffer(base64.b64decode(value["f64"], validate=True), dtype="<f8")
        return Record("learner", str(key), x.reshape(shape).copy())
    raise ValueError(f"record kind {kind!r}")


class TokenSigner:
    """Issues and verifies feedback tokens with shared HMAC keys (module docstring)."""

    def __init__(
        self,
        keys: Sequence[bytes],
        config: TokenConfig | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        if not keys or any(len(k) < 16 for k in keys):
            raise InvalidInputError("feedback token keys: need at least one key of >= 16 bytes")
        self.config = config or TokenConfig()
        self._signing = keys[0]
        self._keys = {_key_id(k): k for k in keys}
        self._wall = wall_clock

    def now_s(self) -> float:
        return self._wall()

    def issue(self, decisions: Decisions) -> bytes:
        """The token for `decisions` (b"" when it would exceed `max_token_bytes`)."""
        payload = json.dumps(
            {
                "r": decisions.request_id,
                "t": int(decisions.issued_s * 1000),
                "d": [[r.kind, r.key, _encode_value(r)] for r in decisions.records],
            },
            separators=(",", ":"),
        ).encode("utf-8")
        body = bytes([VERSION]) + _key_id(self._signing) + payload
        if len(body) + _MAC_BYTES > self.config.max_token_bytes:
            return b""
        return body + hmac.digest(self._signing, body, "sha256")

    def verify(self, token: bytes, request_id: str) -> Decisions:
        """The decisions in `token` for `request_id`; InvalidInputError when the token is not one
        of ours or not this request's, NotFoundError when it is older than the retention window."""
        limit = self.config.max_token_bytes
        if len(token) > limit:
            raise InvalidInputError(f"feedback token is {len(token)} bytes; at most {limit}")
        if len(token) < _HEADER_BYTES + _MAC_BYTES + 2 or token[0] != VERSION:
            raise InvalidInputError(
                f"feedback token is not a meshserve v{VERSION} token (starts {token[:8].hex()!r}, "
                f"{len(token)} bytes): send ExecuteResponse.feedback_token unchanged"
            )
        body, mac = token[:-_MAC_BYTES], token[-_MAC_BYTES:]
        key = self._keys.get(body[1:_HEADER_BYTES])
        if key is None:
            raise InvalidInputError(
                "feedback token was signed with a key this orchestrator does not have (key id "
                f"{body[1:_HEADER_BYTES].hex()}): every orchestrator of a group needs the same "
                "feedback key"
            )
        if not hmac.compare_digest(mac, hmac.digest(key, body, "sha256")):
            raise InvalidInputError("feedback token signature does not verify (altered token)")
        try:
            data = json.loads(body[_HEADER_BYTES:])
            decisions = Decisions(
                str(data["r"]),
                int(data["t"]) / 1000.0,
                tuple(_decode_record(item) for item in data["d"]),
            )
        except (ValueError, TypeError, KeyError, AttributeError, RecursionError) as exc:
            raise InvalidInputError(f"feedback token payload is malformed: {exc!s:.200}") from None
        if decisions.request_id != request_id:
            raise InvalidInputError(
                f"feedback token belongs to request {decisions.request_id[:80]!r}, not "
                f"{request_id[:80]!r}"
            )
        self.check_fresh(decisions)
        return decisions

    def check_fresh(self, decisions: Decisions) -> None:
        """NotFoundError when `decisions` fall outside the retention window."""
        age = self._wall() - decisions.issued_s
        if age > self.config.retention_s:
            raise NotFoundError(
                f"request {decisions.request_id[:80]!r} was served {age:.0f}s ago; feedback is "
                f"accepted for {self.config.retention_s:.0f}s"
            )
        if age < -self.config.future_skew_s:
            raise InvalidInputError(
                f"feedback token is issued {-age:.0f}s in the future (clock skew between "
                f"orchestrators above {self.config.future_skew_s:.0f}s)"
            )
