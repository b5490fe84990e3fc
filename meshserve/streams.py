"""Bidirectional stream fan-out: every request item runs concurrently, replies as they finish.

``InferStream`` (modelsvc) and ``ExecuteStream`` (orchestrator) are both::

    async for reply in fan_out(request_iterator, handle, max_in_flight=n, on_error=reply_for):
        yield reply
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from typing import TypeVar

__all__ = ["fan_out"]

Req = TypeVar("Req")
Resp = TypeVar("Resp")


class _End:
    """The reader's last word: the stream ended (error None) or reading it raised `error`."""

    __slots__ = ("error",)

    def __init__(self, error: BaseException | None) -> None:
        self.error = error


async def fan_out(
    requests: AsyncIterable[Req],
    handle: Callable[[Req], Awaitable[Resp]],
    *,
    max_in_flight: int,
    on_error: Callable[[Req, Exception], Resp],
) -> AsyncIterator[Resp]:
    """Run ``handle(item)`` for every item of `requests` concurrently; yield each reply.

    Contract:

    - **Order**: replies are yielded in completion order, not request order (callers correlate
      by an id carried in the item).
    - **Bound**: at most `max_in_flight` handlers run at once; while all slots are taken the
      next item is not read, so a fast client is held back by the transport's flow control.
      A slot is freed when the handler returns, before its reply is yielded.
    - **Item failure**: a handler that raises an Exception gets the reply
      ``on_error(item, exc)`` (e.g. an in-band Status carrying the item's id) in its place;
      the stream and the other items carry on. (If `on_error` itself raises, that error ends
      the stream like a read error: a bug must not lose a reply silently.)
    - **End of stream**: when `requests` is exhausted, the items in flight are drained (their
      replies yielded), then the iterator returns.
    - **Read error**: an exception raised while reading `requests` is re-raised to the caller
      once the replies finished before it are yielded; the items still in flight are
      cancelled.
    - **Cancellation**: when the consumer stops early (the call is cancelled, ``aclose()``,
      an exception), the reader and every in-flight handler are cancelled and awaited, so no
      task outlives the iterator. A cancelled handler yields no reply.

    Per item: one task, one semaphore acquire/release and one queue put/get.
    """
    if max_in_flight < 1:
        raise ValueError(f"max_in_flight must be >= 1, got {max_in_flight}")
    replies: asyncio.Queue[Resp | _End] = asyncio.Queue()
    slots = asyncio.Semaphore(max_in_flight)
    tasks: set[asyncio.Task[None]] = set()
    loop = asyncio.get_running_loop()

    async def run(item: Req) -> None:
        reply: Resp | _End
        try:
            reply = await handle(item)
        except Exception as exc:
            try:
                reply = on_error(item, exc)
            except Exception as bug:
                reply = _End(bug)
        finally:
            slots.release()
        replies.put_nowait(reply)

    async def read() -> None:
        try:
            async for item in requests:
                await slots.acquire()
                task = loop.create_task(run(item))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            while tasks:
                await asyncio.wait(list(tasks))
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            replies.put_nowait(_End(exc))
            return
        replies.put_nowait(_End(None))

    reader = loop.create_task(read())
    try:
        while True:
            reply = await replies.get()
            if isinstance(reply, _End):
                if reply.error is not None:
                    raise reply.error
                return
            yield reply
    finally:
        reader.cancel()
        pending = [reader, *tasks]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
