"""Reading a request body within `HttpConfig`'s limits, before any work is done on it.

Size: Content-Length over ``max_body_bytes`` is refused before a byte is read, a chunked body
as soon as it grows past it (413). Time: the whole body must arrive within ``body_timeout_s``
(408: a slow trickle holds one connection, never the loop). JSON: ``application/json`` only
(415 otherwise), UTF-8, at most ``max_json_depth`` levels of objects/arrays (400 naming the
limit, also for bodies nested too deep for the decoder itself).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import web

from meshserve.errors import DeadlineExceededError, InvalidInputError
from meshserve.limits import LimitExceededError
from meshserve.web.config import HttpConfig

__all__ = ["BodyTimeoutError", "UnsupportedMediaTypeError", "read_body", "read_json"]

JSON_TYPES = ("application/json",)


class BodyTimeoutError(DeadlineExceededError):
    """The client did not send its body in time (HTTP 408)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, reason="body_timeout")


class UnsupportedMediaTypeError(InvalidInputError):
    """A body of a content type the endpoint does not read (HTTP 415)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, reason="unsupported_media_type")


def _too_big(size: int | str, config: HttpConfig) -> LimitExceededError:
    return LimitExceededError(
        f"request body of {size} bytes is over the limit max_body_bytes={config.max_body_bytes}"
    )


async def read_body(request: web.Request, config: HttpConfig) -> bytes:
    """The whole body, or the error for its size or for a client too slow to send it."""
    length = request.content_length
    if length is not None and length > config.max_body_bytes:
        raise _too_big(length, config)
    try:
        async with asyncio.timeout(config.body_timeout_s):
            return await request.read()
    except TimeoutError:
        raise BodyTimeoutError(
            f"the request body did not arrive within body_timeout_s={config.body_timeout_s:g}"
        ) from None
    except web.HTTPRequestEntityTooLarge:
        raise _too_big(f"more than {config.max_body_bytes}", config) from None


def check_json_type(request: web.Request) -> None:
    """415 unless the body is declared JSON (``application/json``, any ``+json`` type)."""
    content_type = request.content_type
    if content_type not in JSON_TYPES and not content_type.endswith("+json"):
        raise UnsupportedMediaTypeError(
            f"content type {content_type[:64]!r} is not read here (expected application/json)"
        )


def parse_json(body: bytes, config: HttpConfig) -> Any:
    """The JSON value of `body`, depth-checked."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidInputError(f"the body is not UTF-8 (byte {exc.start})") from None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidInputError(
            f"the body is not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    except RecursionError:
        raise InvalidInputError(
            f"the body nests deeper than max_json_depth={config.max_json_depth}"
        ) from None
    _check_depth(value, config.max_json_depth)
    return value


def _check_depth(value: Any, max_depth: int) -> None:
    """Objects and arrays at most `max_depth` deep. An array whose first element is a scalar is
    a leaf here (tensor rows: numpy refuses ragged or mixed ones when they are converted)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > max_depth:
            raise InvalidInputError(f"the body nests deeper than max_json_depth={max_depth}")
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list) and item and isinstance(item[0], (list, dict)):
            children = item
        else:
            continue
        stack.extend((child, depth + 1) for child in children if isinstance(child, (list, dict)))


async def read_json(request: web.Request, config: HttpConfig) -> Any:
    """Content type, size, time and depth checked; the parsed JSON value."""
    check_json_type(request)
    return parse_json(await read_body(request, config), config)
