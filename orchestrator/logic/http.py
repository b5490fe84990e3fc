"""Calls from logic steps to external HTTP services: one deadline, safe retries, a breaker per host.

`HttpClient.request_json` sends one request per attempt. Budget: the whole call gets
`timeout_s`, bounded by the request's deadline; each attempt gets at most `attempt_timeout_s`
of what is left. Retries (full-jitter exponential backoff from the injected rng, at most
`max_attempts`) happen only for idempotent methods (GET, HEAD, OPTIONS, PUT, DELETE) unless
`retry_non_idempotent` opts in, and only on connection errors, timeouts of one attempt and the
statuses in `retry_statuses` (429, 502, 503, 504 by default). Each host (``scheme://host:port``)
has a `CircuitBreaker`: those same failures count against it, and while it is open calls fail at
once with UnavailableError (a pushback of the time left) instead of waiting on a sick service.

Every attempt is a CLIENT span (HTTP semantic conventions: ``http.request.method``,
``server.address``, ``url.full`` without query or credentials, ``http.response.status_code``,
``http.request.resend_count``) and sends the W3C ``traceparent`` of that span, so the called
service joins the request's trace. The answer is read up to `max_response_bytes` (more is
FailedPreconditionError), must be JSON, and `request_json` callers may validate it further.

Final failures map to meshserve errors: timeouts -> DeadlineExceededError, unreachable,
breaker open or retryable statuses -> UnavailableError, other 4xx -> InvalidInputError with the
body's first line, an oversized or non-JSON answer -> FailedPreconditionError.
"""

from __future__ import annotations

import asyncio
import json as jsonlib
import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import numpy as np
from opentelemetry.util.types import AttributeValue

from meshserve.errors import (
    DeadlineExceededError,
    FailedPreconditionError,
    InvalidInputError,
    UnavailableError,
)
from meshserve.orchestrator.logic import LogicContext, logic
from meshserve.orchestrator.logic.breaker import BreakerConfig, Breakers
from meshserve.orchestrator.logic.per_loop import PerLoop
from meshserve.orchestrator.logic.secrets import SecretRef, secret_ref
from meshserve.orchestrator.logic.spans import client_span
from meshserve.orchestrator.logic.validation import spec_from_params, validate_inputs
from meshserve.telemetry import current_traceparent

__all__ = ["IDEMPOTENT_METHODS", "HttpClient", "HttpConfig", "close_clients"]

log = logging.getLogger(__name__)

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})


@dataclass(frozen=True)
class HttpConfig:
    """Budget, retry policy, response bound and breaker of external calls."""

    timeout_s: float = 2.0
    attempt_timeout_s: float | None = None  # None: an attempt may use all that is left
    max_attempts: int = 3
    backoff_base_s: float = 0.05
    backoff_max_s: float = 1.0
    retry_statuses: tuple[int, ...] = (429, 502, 503, 504)
    retry_non_idempotent: bool = False
    max_response_bytes: int = 1 << 20
    breaker: BreakerConfig = field(default_factory=BreakerConfig)


class _HostFailure(Exception):
    """One attempt failed in a way that counts against the host; `retry` when another attempt
    may succeed (connection error, timeout, a status in `retry_statuses`)."""

    def __init__(self, message: str, *, retry: bool = True) -> None:
        super().__init__(message)
        self.retry = retry


class HttpClient:
    """A shared aiohttp session with the policy above; close it with `close()`."""

    def __init__(
        self,
        config: HttpConfig | None = None,
        *,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
        breakers: Breakers | None = None,
    ) -> None:
        self.config = config or HttpConfig()
        self._rng = rng or random.Random()
        self._clock = clock
        self.breakers = breakers or Breakers(self.config.breaker, clock=clock)
        self._session: aiohttp.ClientSession | None = None
        self.attempts_total = 0

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession()
        return self._session

    async def request_json(
        self,
        method: str,
        url: str,
        *,
        json: Any = None,
        params: dict[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        deadline: float | None = None,
    ) -> Any:
        """The decoded JSON body of a 2xx answer (see the module docstring for failures)."""
        cfg = self.config
        method = method.upper()
        parts = urlsplit(url)
        netloc = f"{parts.hostname}:{parts.port}" if parts.port else str(parts.hostname)
        host = f"{parts.scheme}://{netloc}"
        shown = urlunsplit((parts.scheme, netloc, parts.path, "", ""))  # no query, no userinfo
        breaker = self.breakers.for_host(host)
        end = self._clock() + cfg.timeout_s
        if deadline is not None:
            end = min(end, deadline)
        attempts = cfg.max_attempts
        if method not in IDEMPOTENT_METHODS and not cfg.retry_non_idempotent:
            attempts = 1
        last = ""
        for attempt in range(1, attempts + 1):
            left = end - self._clock()
            if left <= 0:
                break
            if not breaker.allow():
                wait_s = breaker.retry_after_s()
                raise UnavailableError(
                    f"{method} {shown}: circuit breaker open for {host} after repeated failures "
                    f"({last or 'earlier calls'}); next trial in {wait_s:.1f}s",
                    retry_pushback_ms=max(1, int(wait_s * 1000)),
                )
            if cfg.attempt_timeout_s is not None:
                left = min(left, cfg.attempt_timeout_s)
            self.attempts_total += 1
            attrs: dict[str, AttributeValue] = {
                "http.request.method": method,
                "server.address": parts.hostname or "",
                "server.port": parts.port or (443 if parts.scheme == "https" else 80),
                "url.full": shown,
            }
            if attempt > 1:
                attrs["http.request.resend_count"] = attempt - 1
            try:
                with client_span(method, attrs) as span:
                    out = await self._attempt(method, url, shown, json, params, headers, left, span)
                breaker.record_success()
                return out
            except _HostFailure as exc:
                last = str(exc)
                breaker.record_failure()
                if not exc.retry:
                    raise UnavailableError(f"{method} {shown} answered {last}") from None
            log.debug("%s %s attempt %d failed: %s", method, shown, attempt, last)
            if attempt < attempts:
                backoff = self._rng.uniform(
                    0, min(cfg.backoff_max_s, cfg.backoff_base_s * 2 ** (attempt - 1))
                )
                await asyncio.sleep(min(backoff, max(0.0, end - self._clock())))
        if self._clock() >= end:
            raise DeadlineExceededError(
                f"{method} {shown} did not answer within {cfg.timeout_s}s ({last or 'no answer'})"
            )
        raise UnavailableError(f"{method} {shown} failed after {attempts} attempts: {last}")

    async def _attempt(
        self,
        method: str,
        url: str,
        shown: str,
        json: Any,
        params: dict[str, str] | None,
        headers: Mapping[str, str] | None,
        timeout_s: float,
        span: Any,
    ) -> Any:
        send = dict(headers or {})
        traceparent = current_traceparent()
        if traceparent:
            send["traceparent"] = traceparent
        limit = self.config.max_response_bytes
        try:
            async with self._get_session().request(
                method,
                url,
                json=json,
                params=params,
                headers=send,
                timeout=aiohttp.ClientTimeout(total=timeout_s),
            ) as resp:
                if span is not None:
                    span.set_attribute("http.response.status_code", resp.status)
                if 200 <= resp.status < 300:
                    if resp.content_length is not None and resp.content_length > limit:
                        raise _too_large(method, shown, limit)
                    body = await resp.content.read(limit + 1)
                    if len(body) > limit:
                        raise _too_large(method, shown, limit)
                    try:
                        return jsonlib.loads(body)
                    except ValueError as exc:
                        raise FailedPreconditionError(
                            f"{method} {shown} answered {resp.status} with a body that is not "
                            f"JSON ({exc}); first bytes: {body[:80]!r}"
                        ) from None
                lines = (await resp.content.read(200)).decode("utf-8", "replace").splitlines()
                last = f"HTTP {resp.status} {lines[0] if lines else ''}".strip()
                if span is not None:
                    span.set_attribute("error.type", str(resp.status))
                if resp.status in self.config.retry_statuses or resp.status >= 500:
                    raise _HostFailure(last, retry=resp.status in self.config.retry_statuses)
                raise InvalidInputError(f"{method} {shown} answered {last}")
        except (TimeoutError, aiohttp.ServerTimeoutError):
            raise _HostFailure(f"attempt timed out after {timeout_s:.3g}s") from None
        except aiohttp.ClientError as exc:
            raise _HostFailure(f"{type(exc).__name__}: {exc}") from None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def _too_large(method: str, shown: str, limit: int) -> FailedPreconditionError:
    return FailedPreconditionError(
        f"{method} {shown} answered more than max_response_bytes={limit} bytes; raise the "
        "step's 'max_response_bytes' or make the service answer less"
    )


_clients: PerLoop[HttpClient] = PerLoop()
_breakers: dict[BreakerConfig, Breakers] = {}  # per process: hosts are shared by steps


async def close_clients() -> None:
    """Close the sessions the ``http.json`` step opened on this event loop (at shutdown)."""
    for client in _clients.take_loop():
        await client.close()


def _config_of(ctx: LogicContext) -> HttpConfig:
    base = HttpConfig()
    attempt = ctx.param("attempt_timeout_s", None)
    return HttpConfig(
        timeout_s=float(ctx.param("timeout_s", base.timeout_s)),
        attempt_timeout_s=None if attempt is None else float(attempt),
        max_attempts=int(ctx.param("max_attempts", base.max_attempts)),
        retry_non_idempotent=bool(ctx.param("retry_non_idempotent", False)),
        max_response_bytes=int(ctx.param("max_response_bytes", base.max_response_bytes)),
        breaker=BreakerConfig(
            failure_threshold=int(ctx.param("breaker_failures", base.breaker.failure_threshold)),
            reset_timeout_s=float(ctx.param("breaker_reset_s", base.breaker.reset_timeout_s)),
        ),
    )


def _headers_of(ctx: LogicContext) -> dict[str, str]:
    """Plain ``headers``, ``secret_headers`` ({name: {env: VAR} | {file: PATH}}) and a bearer
    token from ``bearer_token_env`` / ``bearer_token_file``; secrets are read per call (rotated
    files take effect) and never logged."""
    where = f"step {ctx.step!r}"
    headers = {str(k): str(v) for k, v in dict(ctx.param("headers", {})).items()}
    for name, ref in dict(ctx.param("secret_headers", {})).items():
        if not isinstance(ref, Mapping) or set(ref) - {"env", "file"} or len(ref) != 1:
            raise InvalidInputError(
                f"{where}: secret_headers[{name!r}] must be {{env: VAR}} or {{file: PATH}}"
            )
        headers[str(name)] = SecretRef(
            env_var=str(ref.get("env", "")), file=str(ref.get("file", ""))
        ).read()
    token = secret_ref(ctx.params, "bearer_token", where)
    if token is not None:
        headers["Authorization"] = f"Bearer {token.read()}"
    return headers


@logic("http.json")
async def http_json(inputs: dict[str, Any], ctx: LogicContext) -> dict[str, Any]:
    """Send the inputs (as lists) as JSON to param ``url`` (``$VAR`` expanded from the
    orchestrator's environment; ``method``, default POST); the JSON
    object answered becomes the outputs (lists of numbers become arrays). Params: ``timeout_s``,
    ``attempt_timeout_s``, ``max_attempts``, ``retry_non_idempotent``, ``max_response_bytes``,
    ``breaker_failures``, ``breaker_reset_s``, ``headers`` / ``secret_headers`` /
    ``bearer_token_env`` / ``bearer_token_file``, and ``response``: field specs (as in
    ``validate``) the answer must meet (FailedPreconditionError naming the field otherwise)."""
    cfg = _config_of(ctx)
    breakers = _breakers.get(cfg.breaker) or _breakers.setdefault(
        cfg.breaker, Breakers(cfg.breaker)
    )
    client = _clients.get(cfg, lambda: HttpClient(cfg, breakers=breakers))
    payload = {k: np.asarray(v).tolist() for k, v in inputs.items()}
    url = ctx.path_param("url")  # $VAR expanded: where the service is differs per deployment
    answer = await client.request_json(
        str(ctx.param("method", "POST")),
        url,
        json=payload,
        headers=_headers_of(ctx),
        deadline=ctx.deadline,
    )
    if not isinstance(answer, dict):
        raise FailedPreconditionError(
            f"step {ctx.step!r}: {urlsplit(url).path} answered {type(answer).__name__}; "
            "expected a JSON object of named outputs"
        )
    outputs = {k: np.asarray(v) for k, v in answer.items()}
    specs = ctx.param("response", None)
    if specs is not None:
        try:
            where = f"answer of {urlsplit(url).path or '/'}"
            validate_inputs(outputs, spec_from_params(specs), where=where)
        except InvalidInputError as exc:
            raise FailedPreconditionError(f"step {ctx.step!r}: {exc.message}") from None
    return outputs
