"""A streaming feedback source: labels and rewards from a NATS JetStream subject, applied exactly
like ``Feedback`` RPCs.

Message (UTF-8 JSON, one per NATS message)::

    {"request_id": "<the Execute request id>", "reward": 0.7}      # bandits, in [0, 1]
    {"request_id": "<the Execute request id>", "label": 3}         # online learners

plus, optionally, ``"feedback_token": "<base64 of ExecuteResponse.feedback_token>"``: with it
any orchestrator of the group applies the message, without it only the one that served the
request knows it (docs/LEARNING.md).

`FeedbackApplier` is the transport-free core: it parses and checks a message (the same limits
as the RPC), then applies it through ``Learning.apply_feedback`` — the very call
``OrchestratorServicer.Feedback`` makes — so the stream and the RPC cannot drift. Outcomes:

- ``applied``: the learner/bandit took it (durable in KV when ``apply_feedback`` returns) ->
  ack.
- ``duplicate``: this request id was applied already (JetStream delivers at least once: a
  redelivery after a lost ack, or the same label published twice) -> ack, not applied again.
  Applied ids are remembered (bounded, `applied_ttl_s`); publishers should also set the
  ``Nats-Msg-Id`` header to the request id so JetStream drops duplicate publishes itself.
- ``dead_lettered``: malformed (not JSON, wrong fields or values) or unmatched (no pending
  decision for the id: unknown, expired, or rated already over the RPC) -> the original bytes
  are published to the dead-letter subject with headers ``Meshserve-Reason`` and
  ``Meshserve-Error``, then the message is acked. Nothing is dropped silently.
- ``retried``: a transient failure (KV unavailable, not the leader) -> nak with a delay, so
  JetStream redelivers it (to this or another orchestrator); after `max_deliver` deliveries it
  is dead-lettered with reason ``gave_up``.

`FeedbackStreamConsumer` is the NATS side: a durable pull consumer on `subject` in `stream`
(created when missing), fetching up to `batch` messages at a time, one handled at a time in
arrival order.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from meshserve.errors import (
    InvalidInputError,
    MeshError,
    NotFoundError,
    OutOfRangeError,
    UnavailableError,
)
from meshserve.limits import DEFAULT_LIMITS, Limits, check_string
from meshserve.orchestrator.learning_port import Feedback, Learning
from meshserve.orchestrator.logic.metrics import STREAM_MESSAGES

__all__ = [
    "APPLIED",
    "DEAD_LETTERED",
    "DUPLICATE",
    "RETRIED",
    "FeedbackApplier",
    "FeedbackStreamConfig",
    "FeedbackStreamConsumer",
    "Outcome",
]

log = logging.getLogger(__name__)

APPLIED, DUPLICATE, DEAD_LETTERED, RETRIED = "applied", "duplicate", "dead_lettered", "retried"


@dataclass(frozen=True)
class FeedbackStreamConfig:
    """Where feedback arrives and how it is consumed. `url` may hold credentials: it is read
    at the process edge from a secret file or the environment, and never logged."""

    url: str
    stream: str = "MESHSERVE_FEEDBACK"
    subject: str = "meshserve.feedback"
    dead_letter_subject: str = "meshserve.feedback.dead"
    durable: str = "meshserve-orchestrator"
    batch: int = 64
    fetch_wait_s: float = 1.0
    connect_timeout_s: float = 10.0  # at start: then UnavailableError (later: reconnects forever)
    ack_wait_s: float = 30.0
    max_deliver: int = 20
    retry_delay_s: float = 1.0
    applied_max_ids: int = 100_000
    applied_ttl_s: float = 3600.0


@dataclass(frozen=True)
class Outcome:
    """What became of one message: `kind` (applied, duplicate, dead_lettered, retried), the
    dead-letter `reason` (malformed, unmatched, gave_up) and a message a person can act on."""

    kind: str
    reason: str = ""
    detail: str = ""
    applied_to: tuple[str, ...] = ()


class FeedbackApplier:
    """Parse, de-duplicate and apply feedback messages (module docstring); transport-free."""

    def __init__(
        self,
        learning: Learning,
        *,
        limits: Limits = DEFAULT_LIMITS,
        max_deliver: int = 20,
        applied_max_ids: int = 100_000,
        applied_ttl_s: float = 3600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.learning = learning
        self.limits = limits
        self.max_deliver = max_deliver
        self._applied: OrderedDict[str, float] = OrderedDict()
        self._max_ids = applied_max_ids
        self._ttl_s = applied_ttl_s
        self._clock = clock
        self._in_flight: set[str] = set()

    def parse(self, data: bytes) -> Feedback:
        """The Feedback a message carries; InvalidInputError saying what is wrong."""
        shown = data[:120]
        try:
            body = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise InvalidInputError(
                f"feedback message is not UTF-8 JSON ({exc}): {shown!r}"
            ) from None
        if not isinstance(body, dict):
            raise InvalidInputError(f"feedback message must be a JSON object, got {shown!r}")
        request_id = body.get("request_id")
        if not isinstance(request_id, str) or not request_id:
            raise InvalidInputError(f"feedback message needs a string 'request_id': {shown!r}")
        check_string("feedback request_id", request_id, self.limits, "max_string_chars")
        reward, label = body.get("reward"), body.get("label")
        if (reward is None) == (label is None):
            raise InvalidInputError(
                f"feedback message needs exactly one of 'reward' (in [0, 1]) or 'label': {shown!r}"
            )
        if reward is not None:
            if isinstance(reward, bool) or not isinstance(reward, int | float):
                raise InvalidInputError(f"feedback 'reward' must be a number: {shown!r}")
            if not (math.isfinite(reward) and 0.0 <= reward <= 1.0):
                raise InvalidInputError(f"feedback 'reward' {reward} must be in [0, 1]")
            return Feedback(request_id, reward=float(reward), token=self._token(body, shown))
        if isinstance(label, bool) or not isinstance(label, int):
            raise InvalidInputError(f"feedback 'label' must be an integer: {shown!r}")
        return Feedback(request_id, label=label, token=self._token(body, shown))

    def _token(self, body: dict[str, Any], shown: bytes) -> bytes:
        token = body.get("feedback_token", "")
        if not isinstance(token, str):
            raise InvalidInputError(f"feedback 'feedback_token' must be base64 text: {shown!r}")
        check_string("feedback feedback_token", token, self.limits, "max_string_chars")
        try:
            return base64.b64decode(token, validate=True)
        except binascii.Error:
            raise InvalidInputError(f"feedback 'feedback_token' is not base64: {shown!r}") from None

    def _seen(self, request_id: str) -> bool:
        now = self._clock()
        while self._applied:
            oldest, at = next(iter(self._applied.items()))
            if now - at < self._ttl_s and len(self._applied) <= self._max_ids:
                break
            self._applied.pop(oldest)
        return request_id in self._applied

    async def handle(self, data: bytes, deliveries: int = 1) -> Outcome:
        """Apply one message (`deliveries`: how often the stream delivered it, this time too)."""
        try:
            feedback = self.parse(data)
        except MeshError as exc:
            return Outcome(DEAD_LETTERED, "malformed", exc.message)
        request_id = feedback.request_id
        if self._seen(request_id):
            return Outcome(DUPLICATE, detail=f"request {request_id!r} was applied already")
        if request_id in self._in_flight:
            return Outcome(RETRIED, detail=f"request {request_id!r} is being applied")
        self._in_flight.add(request_id)
        try:
            # The same entry point as OrchestratorServicer.Feedback.
            outcome = await self.learning.apply_feedback(feedback)
        except (InvalidInputError, OutOfRangeError) as exc:
            return Outcome(DEAD_LETTERED, "malformed", exc.message)
        except NotFoundError as exc:
            return Outcome(DEAD_LETTERED, "unmatched", exc.message)
        except Exception as exc:
            detail = exc.message if isinstance(exc, MeshError) else f"{type(exc).__name__}: {exc}"
            if deliveries >= self.max_deliver:
                return Outcome(DEAD_LETTERED, "gave_up", f"after {deliveries} deliveries: {detail}")
            return Outcome(RETRIED, detail=detail)
        finally:
            self._in_flight.discard(request_id)
        self._applied[request_id] = self._clock()
        if outcome.duplicate:  # applied before, through the RPC or another orchestrator
            return Outcome(DUPLICATE, detail=f"request {request_id!r} was applied already")
        return Outcome(APPLIED, applied_to=outcome.applied)


class FeedbackStreamConsumer:
    """Consumes `config.subject` with a durable JetStream pull consumer (module docstring)."""

    def __init__(
        self, learning: Learning, config: FeedbackStreamConfig, *, limits: Limits = DEFAULT_LIMITS
    ) -> None:
        self.config = config
        self.applier = FeedbackApplier(
            learning,
            limits=limits,
            max_deliver=config.max_deliver,
            applied_max_ids=config.applied_max_ids,
            applied_ttl_s=config.applied_ttl_s,
        )
        self.counts: dict[str, int] = {APPLIED: 0, DUPLICATE: 0, DEAD_LETTERED: 0, RETRIED: 0}
        self._nc: Any = None
        self._js: Any = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    async def start(self) -> None:
        """Connect, make sure the stream and the durable consumer exist, start consuming."""
        import nats
        from nats.js.api import ConsumerConfig, StreamConfig
        from nats.js.errors import NotFoundError as StreamNotFound

        cfg = self.config

        async def on_error(exc: Exception) -> None:  # no traceback, no URL (credentials)
            log.warning("feedback stream: NATS connection trouble: %s", type(exc).__name__)

        try:
            self._nc = await asyncio.wait_for(
                nats.connect(
                    cfg.url, connect_timeout=2, max_reconnect_attempts=-1, error_cb=on_error
                ),
                cfg.connect_timeout_s,
            )
        except Exception as exc:  # nats-py raises its own types; the URL may hold credentials
            raise UnavailableError(
                f"feedback stream: cannot reach NATS for subject {cfg.subject!r} "
                f"({type(exc).__name__})"
            ) from None
        self._js = self._nc.jetstream()
        try:
            await self._js.stream_info(cfg.stream)
        except StreamNotFound:
            await self._js.add_stream(
                StreamConfig(
                    name=cfg.stream,
                    subjects=[cfg.subject, cfg.dead_letter_subject],
                    duplicate_window=120.0,
                )
            )
        sub = await self._js.pull_subscribe(
            cfg.subject,
            durable=cfg.durable,
            stream=cfg.stream,
            config=ConsumerConfig(
                ack_wait=cfg.ack_wait_s, max_deliver=cfg.max_deliver, filter_subject=cfg.subject
            ),
        )
        self._task = asyncio.create_task(self._consume(sub), name="feedback-stream")
        log.info("feedback stream: consuming %s (stream %s)", cfg.subject, cfg.stream)

    async def _consume(self, sub: Any) -> None:
        from nats.errors import TimeoutError as NatsTimeout

        while not self._stopping:
            try:
                messages = await sub.fetch(self.config.batch, timeout=self.config.fetch_wait_s)
            except (NatsTimeout, TimeoutError):
                continue
            except asyncio.CancelledError:
                raise
            except Exception:  # connection trouble: nats-py reconnects; try again shortly
                log.warning("feedback stream fetch failed; retrying", exc_info=True)
                await asyncio.sleep(self.config.retry_delay_s)
                continue
            for msg in messages:
                if self._stopping:  # unacked: redelivered (to another orchestrator)
                    break
                await self._handle(msg)

    async def _handle(self, msg: Any) -> None:
        deliveries = int(getattr(msg.metadata, "num_delivered", 1) or 1)
        outcome = await self.applier.handle(msg.data, deliveries)
        if outcome.kind == DEAD_LETTERED:
            try:
                await self._js.publish(
                    self.config.dead_letter_subject,
                    msg.data,
                    headers={
                        "Meshserve-Reason": outcome.reason,
                        "Meshserve-Error": outcome.detail[:500],
                        "Meshserve-Subject": msg.subject,
                    },
                )
            except Exception:  # not acked: JetStream redelivers, nothing is lost
                log.warning("feedback stream: dead-letter publish failed", exc_info=True)
                await msg.nak(delay=self.config.retry_delay_s)
                return
            log.info("feedback stream: dead-lettered (%s): %s", outcome.reason, outcome.detail)
        if outcome.kind == RETRIED:
            await msg.nak(delay=self.config.retry_delay_s)
        else:
            await msg.ack()
        self.counts[outcome.kind] += 1
        STREAM_MESSAGES.labels(self.config.subject, outcome.kind).inc()

    async def stop(self) -> None:
        """Stop consuming (the message being handled finishes first) and disconnect."""
        self._stopping = True
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), self.config.fetch_wait_s + 5)
            except TimeoutError:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
            self._task = None
        if self._nc is not None:
            with contextlib.suppress(Exception):
                await self._nc.close()
            self._nc = None
