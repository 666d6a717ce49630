"""The outbound side of a connection: a bounded queue of frames and the one task that writes them.

Senders never wait for a socket, so a slow socket only delays itself. On Python 3.12 and later a frame for
an idle connection (its queue empty, its writer waiting) is written at once by an eager task started in the
sender's task, the listener's in a fan-out: the socket's buffer almost always takes it, so the task
finishes before `put` returns and no task is woken. A write that has to wait goes on in that task, in the
context it started in (a middleware wrapping `send` may set and reset context variables around it), and the
writer waits for it before writing anything queued after it. On 3.11, or when the writer is busy, frames
are queued. A frame the connection's own task (the one that opened the outbox: a consumer answering its
client) sends to an idle connection is awaited right there, in that task and its context, with no task
made or woken; frames queued meanwhile wait for it, and a socket that makes it wait holds up only its own
connection's task. When the queue is full the client is not keeping up: the queue is dropped
and the socket closed with 1013 (try again later). A callable on the queue (a group event for a consumer
method) runs in the writer task; whatever it sends is written at once, so frames keep their order. A
`Filtered` frame is written only if its filter, called when the frame's turn comes (in the writer task, or in
the sender's when the connection is idle), accepts it.

The queue is a deque and a future that the idle writer awaits, which the next frame queued completes:
each connection holds one deque rather than the four of an `asyncio.Queue`. docs/PERFORMANCE.md has the
figures.

A connection whose client asked for batches (`batches`) is never written at once: its frames are queued
without waking the writer, and `Batches` wakes the writers of every connection with frames waiting in one
callback: at the next step of the event loop, or, when it did so less than `interval` seconds before, that
long after the last time. The writer then sends the text frames waiting in a row as one WebSocket frame, one
event a line (newline-delimited JSON, as Centrifugo's JSON protocol sends), at most `max_bytes` bytes unless
one event alone is larger. Each event's encoded text is reused as it is: under load, a socket costs one
write, and its writer one wake-up, for all the events of an interval; when events are rare, none waits.

What is thrown away, or refused once the connection is closing, the slow clients closed, the calls that
failed and the queue's high-water mark are counted in the manager's `Stats` as they happen.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeAlias

from starlette import status
from starlette.websockets import WebSocket, WebSocketDisconnect

from .calls import eager_task_factory
from .exceptions import RealtimeError, error_frame
from .stats import Stats

__all__ = ["Batches", "EventFilter", "EventHandler", "Filtered", "Outbox", "OutboxState"]

logger = logging.getLogger(__name__)

_SEND_ERRORS = (WebSocketDisconnect, OSError, RuntimeError)


class OutboxState(enum.Enum):
    OPEN = "open"
    CLOSING = "closing"
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class _Close:
    code: int
    reason: str


EventHandler: TypeAlias = Callable[[dict[str, Any]], Awaitable[None]]
EventFilter: TypeAlias = Callable[[Mapping[str, Any], str], bool]


@dataclass(frozen=True, slots=True)
class Filtered:
    """An encoded frame to write only if `accept(event, frame)` says so; `event` is the frame decoded."""

    frame: str
    event: Mapping[str, Any]
    accept: EventFilter


Outbound: TypeAlias = str | bytes | Callable[[], Awaitable[None]] | Filtered


class Batches:
    """When, and how large, the batches of the connections that asked for them are written.

    One callback wakes the writers of all the batching connections with frames waiting: at the next step of
    the event loop, but never sooner than `interval` seconds after the writers it woke before had their
    turn. Counted from then, not from the wake-up: a round of writes to many sockets takes the loop a while,
    and the events that come once it is free again go out together. Events that come further apart than
    that go out at once, one a frame; a burst of them, a fan-out of several events, costs each connection one
    wake-up and one write an interval. Each batch is at most `max_bytes` bytes of UTF-8, unless one event
    alone is larger.
    """

    def __init__(self, *, max_bytes: int = 64 * 1024, interval: float = 0.0) -> None:
        if max_bytes < 1 or interval < 0:
            raise ValueError("max_bytes must be at least 1 and interval not negative")
        self.max_bytes = max_bytes
        self.interval = interval
        self._due: list[Outbox] = []
        self._handle: asyncio.Handle | None = None
        self._flushed = float("-inf")

    def due(self, outbox: Outbox) -> None:
        """Have `outbox`'s writer woken with the others at the next flush."""
        self._due.append(outbox)
        if self._handle is None:
            loop = asyncio.get_running_loop()
            at = self._flushed + self.interval
            if at > loop.time():
                self._handle = loop.call_at(at, self._flush)
            else:
                self._handle = loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._handle = None
        loop = asyncio.get_running_loop()
        self._flushed = loop.time()
        due, self._due = self._due, []
        for outbox in due:
            outbox.write_batch()
        loop.call_soon(self._written)  # after the writers just woken, which go first

    def _written(self) -> None:
        self._flushed = asyncio.get_running_loop().time()


class Outbox:
    def __init__(
        self,
        websocket: WebSocket,
        *,
        size: int,
        close_timeout: float,
        name: str,
        encode: Callable[[Mapping[str, Any]], str],
        stats: Stats,
        batches: Batches | None = None,
    ) -> None:
        self.websocket = websocket
        self.size = size
        self.close_timeout = close_timeout
        self.name = name
        self.state = OutboxState.OPEN
        self.close_code: int | None = None
        self.high_water = 0
        self.batches = batches
        """Set: text frames queued in a row go out together, as lines of one frame (see `Batches`)."""
        self._batch_due = False
        self._encode = encode
        self.stats = stats
        self._queue: deque[Outbound | _Close] = deque()
        self._ready: asyncio.Future[None] | None = None
        """What the writer awaits while the queue is empty; the next item queued completes it."""
        self._outside: asyncio.Task[None] | None = None
        """A write begun at once for an idle connection that had to wait: the writer waits for it first."""
        self._owner = asyncio.current_task()
        """The connection's own task: its `send`s to an idle connection are written in it."""
        self._direct = False
        """A `send` is writing in its caller's task: frames queued meanwhile wait for it."""
        self._direct_done: asyncio.Future[None] | None = None
        """What the writer awaits, made only when it has something queued behind a direct write."""
        self._writer = asyncio.create_task(self._write_forever(), name=f"websocket-writer-{name}")

    @property
    def pending(self) -> int:
        return len(self._queue)

    def in_writer(self) -> bool:
        return asyncio.current_task() is self._writer

    def put(self, item: Outbound) -> bool:
        """Queue a frame or a call; False when it was not queued (closing, or the queue overflowed)."""
        if self.state is not OutboxState.OPEN:
            self.stats.frames_dropped += 1
            return False
        depth = len(self._queue)
        if depth >= self.size:
            self._overflow()
            self.stats.frames_dropped += 1
            return False
        if self.batches is not None:
            self._queue.append(item)  # the writer is woken with the others by `Batches`, or is busy
            if not self._batch_due:
                self._batch_due = True
                self.batches.due(self)
        elif depth or not self._write_now(item):
            self._push(item)
        if depth >= self.high_water:
            self.high_water = depth + 1
            self.stats.queue_high_water = max(self.stats.queue_high_water, depth + 1)
        return True

    def write_batch(self) -> None:
        """Wake the writer, if it waits, to write what was queued for a batch."""
        self._batch_due = False
        if self._queue:
            self._wake()

    async def send(self, frame: str | bytes) -> None:
        if self.in_writer():
            await self._write(frame)
        elif self.idle and asyncio.current_task() is self._owner:
            await self._write_direct(frame)
        else:
            self.put(frame)

    @property
    def idle(self) -> bool:
        """Open, nothing queued and the writer waiting for frames: a write now keeps every frame in order."""
        ready = self._ready
        return (
            self.state is OutboxState.OPEN
            and not self._queue
            and not self._direct
            and ready is not None
            and not ready.done()
        )

    async def _write_direct(self, frame: str | bytes) -> None:
        """Write in the caller's task; frames queued while the socket makes it wait are written after it."""
        self._direct = True
        try:
            await self._write(frame)
        finally:
            self._direct = False
            done, self._direct_done = self._direct_done, None
            if done is not None and not done.done():
                done.set_result(None)

    async def close(self, code: int, reason: str) -> None:
        """Close after the frames already queued are written, waiting at most `close_timeout` for them."""
        if self.state is OutboxState.OPEN:
            self.state = OutboxState.CLOSING
            self.close_code = code
            if self.in_writer():
                await self._close_socket(code, reason)
                return
            self._push(_Close(code, reason))
        if self.in_writer():
            return
        writer = self._writer
        done, _ = await asyncio.wait({writer}, timeout=self.close_timeout)
        if not done:
            writer.cancel()
            await asyncio.wait({writer})
            await self._close_socket(code, reason)

    async def abort(self) -> None:
        """Stop writing without a close frame: the peer is gone."""
        self.state = OutboxState.CLOSED
        self._drop()
        if not self.in_writer():
            self._writer.cancel()
            await asyncio.wait({self._writer})

    def _write_now(self, item: Outbound) -> bool:
        """Write a frame in the caller's task if the writer is idle; True if it was written, or begun (the
        writer then finishes it: see the module), or filtered out. A `Filtered` frame's turn is now: its
        filter runs here, and a call it queues goes after the frame."""
        ready = self._ready
        if ready is None or ready.done() or self._direct:
            return False
        if isinstance(item, Filtered):
            try:
                accepted = item.accept(item.event, item.frame)
            except Exception:
                logger.exception("an event filter of %s failed", self.name)
                self._push(self._failed)  # the error frame is written by the writer
                return True
            if not accepted:
                return True
            if self._ready is not ready:  # the filter queued something: the frame goes first
                self._queue.appendleft(item.frame)
                return True
            item = item.frame
        elif not isinstance(item, str | bytes):
            return False
        if eager_task_factory is None:  # 3.11: the writer writes it (the filter, if any, has run)
            self._push(item)
            return True
        write: asyncio.Task[None] = eager_task_factory(
            asyncio.get_running_loop(), self._write(item), name=f"websocket-write-{self.name}"
        )
        if write.done():
            self._check_outside(write)
        else:
            self._outside = write
            self._ready = None
            ready.set_result(None)
        return True

    def _check_outside(self, write: asyncio.Task[None]) -> None:
        """Report a write begun at once that failed otherwise than by the socket going away."""
        if not write.cancelled() and (error := write.exception()) is not None:
            logger.error("writing to %s failed", self.name, exc_info=error)
            self.state = OutboxState.CLOSED

    def _push(self, item: Outbound | _Close) -> None:
        self._queue.append(item)
        self._wake()

    def _wake(self) -> None:
        ready, self._ready = self._ready, None
        if ready is not None and not ready.done():  # done: the writer was cancelled while it waited
            ready.set_result(None)

    def _drop(self) -> None:
        dropped = sum(not isinstance(item, _Close) for item in self._queue)
        self._queue.clear()
        outside, self._outside = self._outside, None
        if outside is not None and not outside.done() and outside is not asyncio.current_task():
            outside.cancel()
            dropped += 1
        self.stats.frames_dropped += dropped

    def _overflow(self) -> None:
        logger.warning("closing %s: %d frames are waiting, the client does not keep up", self.name, self.size)
        self.state = OutboxState.CLOSING
        self.close_code = status.WS_1013_TRY_AGAIN_LATER
        self._drop()
        self.stats.slow_consumers_closed += 1
        if self.in_writer():
            self._push(_Close(status.WS_1013_TRY_AGAIN_LATER, "client too slow"))
            return
        stuck = self._writer
        stuck.cancel()
        self._writer = asyncio.create_task(self._close_after(stuck), name=f"websocket-close-{self.name}")

    async def _close_after(self, stuck: asyncio.Task[None]) -> None:
        await asyncio.wait({stuck})
        await self._close_socket(status.WS_1013_TRY_AGAIN_LATER, "client too slow")

    async def _close_socket(self, code: int, reason: str) -> None:
        self.state = OutboxState.CLOSED
        self._drop()
        try:
            async with asyncio.timeout(self.close_timeout):
                await self.websocket.close(code, reason)
        except (TimeoutError, *_SEND_ERRORS):
            logger.debug("%s was already gone when closing it with %d", self.name, code)

    async def _write(self, frame: str | bytes) -> None:
        try:
            if isinstance(frame, str):
                await self.websocket.send_text(frame)
            else:
                await self.websocket.send_bytes(frame)
        except _SEND_ERRORS:
            self.state = OutboxState.CLOSED
            self._drop()

    async def _run(self, call: Callable[[], Awaitable[None]]) -> None:
        try:
            await call()
        except RealtimeError as error:
            await self._write(self._encode(error.frame()))
        except Exception:
            logger.exception("an event handler of %s failed", self.name)
            await self._failed()

    async def _write_filtered(self, item: Filtered) -> None:
        frame = self._filtered(item)
        if frame is not None:
            await self._write(frame)

    def _filtered(self, item: Filtered) -> str | None:
        """What to write for a filtered frame now that its turn came: the frame, nothing, or an error."""
        try:
            accepted = item.accept(item.event, item.frame)
        except Exception:
            logger.exception("an event filter of %s failed", self.name)
            return self._failure()
        return item.frame if accepted else None

    async def _failed(self) -> None:
        await self._write(self._failure())

    def _failure(self) -> str:
        self.stats.handler_errors += 1
        return self._encode(error_frame("internal_error", "the server could not handle an event"))

    async def _write_batch(self, first: str | Filtered, limit: int) -> None:
        """Write `first` and the text frames queued right after it as the lines of one frame of at most
        `limit` bytes (or one frame alone, if larger); a call, a binary frame or a close ends the batch."""
        lines: list[str] = []
        size = -1  # the newlines: one fewer than the lines
        item = first
        while True:
            frame = self._filtered(item) if isinstance(item, Filtered) else item
            if frame is not None:
                length = len(frame) if frame.isascii() else len(frame.encode())
                if lines and size + 1 + length > limit:
                    self._queue.appendleft(frame)  # its filter, if any, has run: it opens the next batch
                    break
                lines.append(frame)
                size += 1 + length
            following = self._queue[0] if self._queue else None
            if not isinstance(following, str | Filtered):
                break
            self._queue.popleft()
            item = following
        if lines:
            await self._write("\n".join(lines))

    async def _write_forever(self) -> None:
        while self.state is not OutboxState.CLOSED:
            if self._direct:
                self._direct_done = asyncio.get_running_loop().create_future()
                await self._direct_done
                continue
            if self._outside is not None:
                outside = self._outside
                await asyncio.wait({outside})
                self._check_outside(outside)
                if self._outside is outside:
                    self._outside = None
                continue
            if not self._queue:
                self._ready = asyncio.get_running_loop().create_future()
                await self._ready
                continue
            item = self._queue.popleft()
            if isinstance(item, _Close):
                await self._close_socket(item.code, item.reason)
            elif self.batches is not None and isinstance(item, str | Filtered):
                await self._write_batch(item, self.batches.max_bytes)
            elif isinstance(item, str | bytes):
                await self._write(item)
            elif isinstance(item, Filtered):
                await self._write_filtered(item)
            else:
                await self._run(item)
