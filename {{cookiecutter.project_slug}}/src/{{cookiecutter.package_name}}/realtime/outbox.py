"""The outbound side of a connection: a bounded queue of frames and the one task that writes them.

Senders never wait for a socket, so a slow socket only delays itself. The frames for an idle connection
(its queue empty, its writer waiting) are written by the next round (`Rounds`): one task writes what was
queued for each connection of the round in turn, as a bare relay writes a message to its sockets, so a
fan-out wakes one task rather than a writer per connection. A write the socket cannot take at once goes on
in that task (in the context it began in: a middleware wrapping `send` may set and reset context variables
around it); the rest of the round goes to the connections' own writers, and this connection's writer waits
for that write before writing anything queued after it. Otherwise frames are queued for the connection's
writer. A frame the connection's own task (the one that opened the outbox: a consumer answering its
client) sends to an idle connection is awaited right there, in that task and its context, with no task
made or woken; frames queued meanwhile wait for it, and a socket that makes it wait holds up only its own
connection's task. When the queue is full the client is not keeping up: the queue is dropped and the socket
closed with 1013 (try again later). A callable on the queue (a group event for a consumer method) runs in
the writer task; whatever it sends is written at once, so frames keep their order. A `Filtered` frame is
written only if its filter, called when the frame's turn comes (in the writer task, or in the round's),
accepts it.

The queue is a deque and a future that the idle writer awaits, which the next frame queued completes:
each connection holds one deque rather than the four of an `asyncio.Queue`. docs/PERFORMANCE.md has the
figures.

A connection whose client asked for batches (`batching`) joins rounds of batches, no more often than
`Rounds.interval` allows, and the text frames waiting in a row go out as one WebSocket frame, one event a
line (newline-delimited JSON, as Centrifugo's JSON protocol sends), at most `Rounds.max_bytes` bytes
unless one event alone is larger. Each event's encoded text is reused as it is: under load, a socket costs
one write for all the events of an interval; when events are rare, none waits.

What is thrown away, or refused once the connection is closing, the slow clients closed, the calls that
failed and the queue's high-water mark are counted in the manager's `Stats` as they happen.

The frames go to the WebSocket's `send_text` and `send_bytes`, through whatever middlewares wrap the
server's `send`; unless the app declared that `send` in the scope's extensions (`ServerSend`, under
`SERVER_SEND`): the frames then go straight to it, counted in the `FrameCounts` a middleware may have put
there, and only the handshake and the close pass through the middlewares. Where the server also offers
`WriteNow` (under `WRITE_NOW`), a frame it can write at once is handed to it in a plain call, a round's
frames included, and the rest go to its `send` in order after them.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, TypeAlias

from starlette import status
from starlette.types import Scope, Send
from starlette.websockets import WebSocket, WebSocketDisconnect

from .exceptions import RealtimeError, error_frame
from .stats import Stats

__all__ = [
    "SERVER_SEND",
    "WRITE_NOW",
    "EventFilter",
    "EventHandler",
    "Filtered",
    "FrameCounts",
    "Outbox",
    "OutboxState",
    "Rounds",
    "ServerSend",
    "WriteNow",
]

logger = logging.getLogger(__name__)

_SEND_ERRORS = (WebSocketDisconnect, OSError, RuntimeError)


SERVER_SEND = "realtime.server_send"
"""The key of a `ServerSend` in a WebSocket scope's `extensions`."""

WRITE_NOW = "realtime.write_now"
"""The key of the server's `WriteNow` in a WebSocket scope's `extensions`, where the server offers one."""


class WriteNow(Protocol):
    """The server's write of whole frames to its socket, at once and in order, in one write: False, having
    written nothing, when they must go through the server's `send` instead (its buffer full, the socket
    closing, or frames compressed). `fanned_out=False` says the frames are for this socket alone (a
    batch), not worth keeping framed for others."""

    def __call__(self, *frames: str | bytes, fanned_out: bool = True) -> bool: ...


class FrameCounts(Protocol):
    """The frames and bytes written to the WebSockets of a route, counted as plain integers."""

    sent: int
    bytes_sent: int


class ServerSend:
    """The server's own `send` for one WebSocket, declared by the app in the scope's extensions with
    `declare`, the server's `WriteNow` if it offers one, and what counts the frames (set by a metrics
    middleware on the handshake, if any).

    A middleware that acts on the handshake still hands each frame on in a plain call; writing to the
    server's `send` leaves out those calls and Starlette's state checks, about a microsecond a frame
    behind the app's three middlewares (docs/PERFORMANCE.md, "Frames past the middlewares"). Writing with
    `WriteNow` leaves out the ASGI message and the server's framing of the same frame for every socket too.
    """

    __slots__ = ("counts", "send", "server_write_now")

    def __init__(self, send: Send, server_write_now: WriteNow | None = None) -> None:
        self.send = send
        self.server_write_now = server_write_now
        self.counts: FrameCounts | None = None

    @classmethod
    def declare(cls, scope: Scope, send: Send) -> None:
        """Have the engine write the frames of the WebSocket of `scope` with `send`, the server's."""
        extensions = scope.get("extensions")
        if extensions is None:
            scope["extensions"] = extensions = {}
        write_now = extensions.get(WRITE_NOW)
        extensions[SERVER_SEND] = cls(send, write_now if callable(write_now) else None)

    @staticmethod
    def of(websocket: WebSocket) -> ServerSend | None:
        extensions = websocket.scope.get("extensions")
        found = extensions.get(SERVER_SEND) if extensions is not None else None
        return found if isinstance(found, ServerSend) else None

    def write_now(self, *frames: str | bytes, fanned_out: bool = True) -> bool:
        """Have the server write the frames at once, in one write, and count them; False, with nothing
        written nor counted, when the server cannot (or offers no `WriteNow`): they are then for `write`."""
        server_write_now = self.server_write_now
        if server_write_now is None or not server_write_now(*frames, fanned_out=fanned_out):
            return False
        for frame in frames:
            self._count(frame)
        return True

    def write(self, frame: str | bytes) -> Awaitable[None]:
        """Count the frame and hand it to the server's `send`: its own awaitable, no coroutine of ours."""
        self._count(frame)
        if isinstance(frame, str):
            return self.send({"type": "websocket.send", "text": frame})
        return self.send({"type": "websocket.send", "bytes": frame})

    def _count(self, frame: str | bytes) -> None:
        counts = self.counts
        if counts is not None:
            counts.sent += 1
            if isinstance(frame, str):
                counts.bytes_sent += len(frame) if frame.isascii() else len(frame.encode())
            else:
                counts.bytes_sent += len(frame)


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

WRITE_NOW_BYTES = 64 * 1024
"""The frames of a round go to the server together up to about this many characters a write: a socket that
does not keep up holds little more in the server's buffer than the server's `send` would let it (it waits
once the buffer passes its high-water mark, 64 KiB by default); the rest waits, shared, in the queue."""

# Tuples rather than `str | Filtered`: the union is built again each time the expression runs, once a frame.
_TEXT = (str, Filtered)
_WRITABLE = (str, bytes, Filtered)
_PLAIN = (str, bytes)


class _Round:
    """The connections one task writes to in turn, and how far it got."""

    __slots__ = ("handed_over", "index", "outboxes")

    def __init__(self) -> None:
        self.outboxes: list[Outbox] = []
        self.index = 0
        self.handed_over = False


class Rounds:
    """The task that writes, in turn, what was queued for the connections whose own writer waits.

    A bare relay writes a message to each of its sockets in turn in one task; waking a writer task per
    connection and frame costs more than the write itself. So the frames for an idle connection are queued
    and the connection joins the next round: one task, started for the next step of the event loop, writes
    the frames waiting for each connection of the round, one connection after the other. When a socket
    cannot take a write at once (its buffer is full) the task waits, and a callback run right after hands
    the connections it has not reached to their own writers; the one it waits for is then finished by that
    task, and its own writer waits for it before writing what was queued after.

    The connections whose client asked for batches join a round of their own, never sooner than `interval`
    seconds after the round before them had its turn (counted from then, not from when it was due: a round
    of writes to many sockets keeps the loop busy a while, and the events that come meanwhile go out
    together). Their frames waiting in a row go out as the lines of one frame of at most `max_bytes` bytes
    of UTF-8, unless one event alone is larger.
    """

    def __init__(self, *, max_bytes: int = 64 * 1024, interval: float = 0.0) -> None:
        if max_bytes < 1 or interval < 0:
            raise ValueError("max_bytes must be at least 1 and interval not negative")
        self.max_bytes = max_bytes
        self.interval = interval
        self._next: _Round | None = None
        self._batches_due: list[Outbox] = []
        self._batches_handle: asyncio.Handle | None = None
        self._batches_written = float("-inf")
        self._running: set[asyncio.Task[None]] = set()

    def due(self, outbox: Outbox) -> None:
        """Have the next round write what `outbox` holds: it is in that round from now on."""
        round_ = self._next
        if round_ is None:
            self._next = round_ = _Round()
            round_.outboxes.append(outbox)  # before the task starts: a loop may run its first step at once
            self._start(round_)
        else:
            round_.outboxes.append(outbox)

    def batch_due(self, outbox: Outbox) -> None:
        """Have `outbox`'s batch written by the next round of batches."""
        self._batches_due.append(outbox)
        if self._batches_handle is None:
            loop = asyncio.get_running_loop()
            at = self._batches_written + self.interval
            if at > loop.time():
                self._batches_handle = loop.call_at(at, self._start_batches)
            else:
                self._batches_handle = loop.call_soon(self._start_batches)

    def _start_batches(self) -> None:
        self._batches_handle = None
        due, self._batches_due = self._batches_due, []
        round_ = _Round()
        round_.outboxes = [outbox for outbox in due if outbox.join_batch_round()]
        if round_.outboxes:
            self._start(round_, batches=True)

    def _start(self, round_: _Round, *, batches: bool = False) -> None:
        loop = asyncio.get_running_loop()
        task = loop.create_task(self._write(round_), name="websocket-write-round")
        self._running.add(task)
        task.add_done_callback(self._finished)
        loop.call_soon(self._after_first_step, round_, task, batches)  # right after the task's first step

    async def _write(self, round_: _Round) -> None:
        if self._next is round_:
            self._next = None  # connections due from now on join the next round
        task = asyncio.current_task()
        assert task is not None
        for index, outbox in enumerate(round_.outboxes):
            round_.index = index
            if outbox.wrote_now_in_round():
                continue
            await outbox.write_in_round(task)
            if round_.handed_over:
                return

    def _after_first_step(self, round_: _Round, task: asyncio.Task[None], batches: bool) -> None:
        """Hand the rest of the round to the connections' own writers if its task waits for a socket (or
        was cancelled before it began)."""
        if batches:
            self._batches_written = asyncio.get_running_loop().time()
        if task.done() and not task.cancelled():
            return
        round_.handed_over = True
        if self._next is round_:
            self._next = None
        for outbox in round_.outboxes[round_.index :]:
            outbox.leave_round()  # the one written to now: its writer waits for this task (see `Outbox`)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        if not task.cancelled() and (error := task.exception()) is not None:
            logger.error("a round of writes failed", exc_info=error)


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
        rounds: Rounds,
        batching: bool = False,
    ) -> None:
        self.websocket = websocket
        self._server_send = ServerSend.of(websocket)
        self.size = size
        self.close_timeout = close_timeout
        self.name = name
        self.state = OutboxState.OPEN
        self.close_code: int | None = None
        self.high_water = 0
        self.rounds = rounds
        self.batching = batching
        """Text frames queued in a row go out together, as the lines of one frame (see `Rounds`)."""
        self._batch_due = False
        self._in_round = False
        """A round's task writes what is queued (see `Rounds`): the writer is not woken meanwhile."""
        self._encode = encode
        self.stats = stats
        self._queue: deque[Outbound | _Close] = deque()
        self._ready: asyncio.Future[None] | None = None
        """What the writer awaits while the queue is empty; the next item queued completes it."""
        self._outside: asyncio.Task[None] | None = None
        """A round's task writing to this connection: the writer waits for it before writing anything."""
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
        queue = self._queue
        depth = len(queue)
        if depth >= self.size:
            self._overflow()
            self.stats.frames_dropped += 1
            return False
        queue.append(item)
        if self._in_round:
            pass  # the round's task writes it, or wakes the writer for it
        elif self.batching:
            if not self._batch_due:  # the writer is woken, or the connection joins a round, when it is due
                self._batch_due = True
                self.rounds.batch_due(self)
        elif not depth and not callable(item) and self._writer_waits():
            self._in_round = True
            self.rounds.due(self)
        else:
            self._wake()
        if depth >= self.high_water:
            self.high_water = depth + 1
            self.stats.queue_high_water = max(self.stats.queue_high_water, depth + 1)
        return True

    def _writer_waits(self) -> bool:
        """Whether the writer waits for frames, with nothing being written: another task may write now."""
        ready = self._ready
        return ready is not None and not ready.done() and not self._direct and self._outside is None

    def join_batch_round(self) -> bool:
        """The batch is due: True if the round's task is to write it, else the writer is woken for it."""
        self._batch_due = False
        if not self._queue:
            return False
        if self.state is not OutboxState.CLOSED and not callable(self._queue[0]) and self._writer_waits():
            self._in_round = True
            return True
        self._wake()
        return False

    def leave_round(self) -> None:
        """The writer takes over, once the round's task, if it is writing here, is done (see `Rounds`)."""
        if self._in_round:
            self._in_round = False
            if self._queue or self._outside is not None:
                self._wake()

    def wrote_now_in_round(self) -> bool:
        """Write at once, in a round, the frames at the head of the queue, in one write if the server takes
        them at once (see `ServerSend.write_now`): True when that was all the round had to write here, else
        `write_in_round` writes the rest. Neither a coroutine nor a task switch: under load, a socket costs
        one call and one write a round, however many frames of a fan-out came for it meanwhile."""
        server_send = self._server_send
        if server_send is None or server_send.server_write_now is None or self.batching:
            return False
        queue = self._queue
        if self._in_round and self.state is not OutboxState.CLOSED:
            while queue:
                frames: list[str | bytes] = []
                size = 0
                while queue and size < WRITE_NOW_BYTES:
                    item = queue[0]
                    if not isinstance(item, _PLAIN):
                        break
                    frames.append(item)
                    size += len(item)
                    queue.popleft()
                if not frames:
                    return False  # a call, a filtered frame or the close: for `write_in_round`
                if not server_send.write_now(*frames):
                    queue.extendleft(reversed(frames))
                    return False
        self._in_round = False
        return True

    async def write_in_round(self, task: asyncio.Task[None]) -> None:
        """Write the frames at the head of the queue in `task`, a round's (see `Rounds`); a call or a close
        is left to the writer."""
        self._outside = task
        queue = self._queue
        try:
            while self._in_round and self.state is not OutboxState.CLOSED and queue:
                item = queue[0]
                if not isinstance(item, _WRITABLE):
                    break
                queue.popleft()
                await self._write_frame(item)
        finally:
            if self._outside is task:
                self._outside = None
            if self._in_round:
                self._in_round = False
                if queue:
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
        if self.state is not OutboxState.OPEN or self._queue or self._in_round:
            return False
        return self._writer_waits()

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

    def _check_outside(self, write: asyncio.Task[None]) -> None:
        """Report a round's task that failed while it wrote here otherwise than by the socket going away."""
        if not write.cancelled() and (error := write.exception()) is not None:
            logger.error("writing to %s failed", self.name, exc_info=error)
            self.state = OutboxState.CLOSED

    def _push(self, item: Outbound | _Close) -> None:
        self._queue.append(item)
        if not self._in_round:
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

    async def _write(self, frame: str | bytes, *, fanned_out: bool = True) -> None:
        try:
            server_send = self._server_send
            if server_send is not None:
                if not server_send.write_now(frame, fanned_out=fanned_out):
                    await server_send.write(frame)
            elif isinstance(frame, str):
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

    async def _write_frame(self, item: str | bytes | Filtered) -> None:
        """Write a queued frame: after its filter, if it has one; with the text frames queued right after it,
        if the connection batches."""
        if self.batching and isinstance(item, _TEXT):
            await self._write_batch(item, self.rounds.max_bytes)
        elif isinstance(item, Filtered):
            await self._write_filtered(item)
        else:
            await self._write(item)

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
            if not isinstance(following, _TEXT):
                break
            self._queue.popleft()
            item = following
        if lines:
            await self._write("\n".join(lines), fanned_out=False)

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
            elif isinstance(item, _WRITABLE):
                await self._write_frame(item)
            else:
                await self._run(item)
