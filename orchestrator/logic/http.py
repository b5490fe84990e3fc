"""Calls from logic steps to external HTTP services: one deadline, bounded jittered retries.

`HttpClient.request_json` sends one request per attempt with what is left of the overall budget
(`timeout_s`, further bounded by the request's deadline). It retries only on connection errors,
timeouts of a single attempt and the statuses in `retry_statuses` (429, 502, 503, 504 by default),
at most `max_attempts` times, with full-jitter exponential backoff drawn from the injected rng.
Final failures map to meshserve errors: timeouts -> DeadlineExceededError, unreachable or
retryable statuses -> UnavailableError, other 4xx -> InvalidInputError with the body's first line.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import numpy as np

from meshserve.errors import DeadlineExceededError, InvalidInputError, UnavailableError
from meshserve.orchestrator.logic import LogicContext, logic

__all__ = ["HttpClient", "HttpConfig", "close_clients"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HttpConfig:
    """Budget and retry policy of external calls."""

    timeout_s: float = 2.0
    max_attempts: int = 3
    backoff_base_s: float = 0.05
    backoff_max_s: float = 1.0
    retry_statuses: tuple[int, ...] = (429, 502, 503, 504)


class HttpClient:
    """A shared aiohttp session with the retry policy above; close it with `close()`."""

    def __init__(
        self,
        config: HttpConfig | None = None,
        *,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config or HttpConfig()
        self._rng = rng or random.Random()
        self._clock = clock
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
        deadline: float | None = None,
    ) -> Any:
        """The decoded JSON body of a 2xx answer (see the module docstring for failures)."""
        cfg = self.config
        end = self._clock() + cfg.timeout_s
        if deadline is not None:
            end = min(end, deadline)
        last = ""
        for attempt in range(1, cfg.max_attempts + 1):
            left = end - self._clock()
            if left <= 0:
                break
            self.attempts_total += 1
            try:
                async with self._get_session().request(
                    method,
                    url,
                    json=json,
                    params=params,
                    timeout=aiohttp.ClientTimeout(total=left),
                ) as resp:
                    if 200 <= resp.status < 300:
                        return await resp.json(content_type=None)
                    body = (await resp.text())[:200].splitlines()
                    last = f"HTTP {resp.status} {body[0] if body else ''}".strip()
                    if resp.status not in cfg.retry_statuses:
                        raise InvalidInputError(f"{method} {url} answered {last}")
            except (TimeoutError, aiohttp.ServerTimeoutError):
                last = f"attempt {attempt} timed out"
            except aiohttp.ClientError as exc:
                last = f"{type(exc).__name__}: {exc}"
            log.debug("%s %s attempt %d failed: %s", method, url, attempt, last)
            if attempt < cfg.max_attempts:
                backoff = self._rng.uniform(
                    0, min(cfg.backoff_max_s, cfg.backoff_base_s * 2 ** (attempt - 1))
                )
                await asyncio.sleep(min(backoff, max(0.0, end - self._clock())))
        if self._clock() >= end:
            raise DeadlineExceededError(
                f"{method} {url} did not answer within {cfg.timeout_s}s ({last or 'no answer'})"
            )
        raise UnavailableError(f"{method} {url} failed after {cfg.max_attempts} attempts: {last}")

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


_clients: dict[tuple[int, float, int], HttpClient] = {}


async def close_clients() -> None:
    """Close the sessions the ``http.json`` step opened on this event loop (at shutdown)."""
    loop_id = id(asyncio.get_running_loop())
    for key in [k for k in _clients if k[0] == loop_id]:
        await _clients.pop(key).close()


@logic("http.json")
async def http_json(inputs: dict[str, Any], ctx: LogicContext) -> dict[str, Any]:
    """POST the inputs (as lists) as JSON to params ``url``; the JSON object answered becomes the
    outputs (lists of numbers become arrays). Params ``timeout_s``, ``max_attempts``."""
    cfg = HttpConfig(
        timeout_s=float(ctx.param("timeout_s", 2.0)),
        max_attempts=int(ctx.param("max_attempts", 3)),
    )
    key = (id(asyncio.get_running_loop()), cfg.timeout_s, cfg.max_attempts)
    client = _clients.get(key)
    if client is None:
        client = _clients[key] = HttpClient(cfg)
    payload = {k: np.asarray(v).tolist() for k, v in inputs.items()}
    answer = await client.request_json(
        str(ctx.param("method", "POST")), str(ctx.param("url")), json=payload, deadline=ctx.deadline
    )
    if not isinstance(answer, dict):
        raise InvalidInputError(
            f"step {ctx.step!r}: {ctx.param('url')} answered {type(answer).__name__}; "
            "expected a JSON object of named outputs"
        )
    return {k: np.asarray(v) for k, v in answer.items()}
