"""The load generator: one process holding many WebSocket clients, driven by JSON lines on stdin.

`bench.run` starts one or more of these (`python -m bench.loadgen`) and writes one command per line; each
is answered with one JSON line on stdout (`{"error": ...}` if it failed):

- `connect` {clients: [{url, token}], concurrency, compression, library}: open the clients, `concurrency`
  handshakes at a time, each with `Authorization: Bearer <token>` when it has a token -> {connected,
  handshakes_ms}, each handshake's time from its TCP connect to the server's 101. `library` is `picows`
  (the fastest client at hand, written in Cython: the default) or `websockets` (the only one of the two that
  offers permessage-deflate, which browser-like clients need).
- `settle` {quiet, within}: return once no frame has arrived for `quiet` seconds (or after `within`) ->
  {frames, events}: the frames received so far, and the events in them (more when the server batches).
- `expect` {phase, count}: from now on, count the messages of `phase` (sequence numbers 0 to count - 1).
- `publish` {phase, count, rate, window, size, quiet}: the first client of this process sends the messages,
  `rate` a second, or flat out (`rate` null) with at most `window` of them not yet back to it
  -> {first_send, last_send, sent, closed}.
- `collect` {quiet, within}: wait until every client has every message of the phase, or none came for
  `quiet` seconds, or `within` seconds passed -> {expected, delivered, duplicates, latencies_ms,
  first_arrival, last_arrival, closes, frames, events}, the last two counted since `expect`.
- `disconnect`: close every client. End of input ends the process.

A text frame holds one event, or several, one JSON object a line, for a client that asked for batches
(`?batch=1`): each line counts as one delivery. A message's text is `<phase>:<sequence>:<send time>:`
padded to `size` bytes. The send time is
`time.perf_counter()`, which reads the system-wide monotonic clock on Linux, so the receiving process can
subtract it from its own reading.
"""

from __future__ import annotations

import asyncio
import contextlib
import resource
import sys
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from time import perf_counter
from typing import Any, Self, TypeAlias

import orjson
import uvloop
from picows import WSCloseCode, WSFrame, WSListener, WSMsgType, WSTransport, ws_connect
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

MAX_FRAME_BYTES = 1 << 20
POLL_SECONDS = 0.05
STDIN_LINE_LIMIT = 1 << 26


def raise_open_files_limit() -> None:
    """Allow as many sockets as the hard limit does: the soft default (often 1024) is below a big run."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


@dataclass
class PhaseRecord:
    """Which messages of one phase each client received, and how late."""

    name: str
    count: int
    clients: int
    seen: list[bytearray] = field(init=False)
    latencies: list[float] = field(default_factory=list)
    duplicates: int = 0
    first_arrival: float | None = None
    last_arrival: float | None = None
    echoes: int = 0
    """Messages the first client (the publisher, in the first generator) received."""
    echoed: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.seen = [bytearray(self.count) for _ in range(self.clients)]

    @property
    def expected(self) -> int:
        return self.count * self.clients

    @property
    def complete(self) -> bool:
        return len(self.latencies) == self.expected

    def record(self, client: int, sequence: int, sent: float, now: float) -> None:
        seen = self.seen[client]
        if seen[sequence]:
            self.duplicates += 1
            return
        seen[sequence] = 1
        self.latencies.append(now - sent)
        if client == 0:
            self.echoes += 1
            self.echoed.set()
        if self.first_arrival is None:
            self.first_arrival = now
        self.last_arrival = now


FrameSink: TypeAlias = Callable[[int, str], None]
"""What a client calls with its index and each text frame it receives."""


class ClientClosed(RuntimeError):
    """The server closed the client before it could send."""


class Client(ABC):
    """One WebSocket of the load generator: it sends text, and hands every text frame to a sink."""

    @property
    @abstractmethod
    def close_code(self) -> int | None:
        """The code the server closed this client with (1006 if it just went away), None while open."""

    @abstractmethod
    async def send(self, text: str) -> None: ...

    @abstractmethod
    async def close(self) -> None: ...


class WebsocketsClient(Client):
    """websockets' asyncio client: a reader task per connection; it can offer permessage-deflate."""

    def __init__(self, websocket: ClientConnection, index: int, sink: FrameSink) -> None:
        self.websocket = websocket
        self.reader = asyncio.create_task(self._read(index, sink))

    @classmethod
    async def open(
        cls, url: str, headers: dict[str, str], compression: bool, index: int, sink: FrameSink
    ) -> Self:
        websocket = await connect(
            url,
            additional_headers=headers,
            compression="deflate" if compression else None,
            max_size=MAX_FRAME_BYTES,
            open_timeout=60,
            ping_interval=None,
        )
        return cls(websocket, index, sink)

    @property
    def close_code(self) -> int | None:
        return self.websocket.close_code

    async def send(self, text: str) -> None:
        try:
            await self.websocket.send(text)
        except ConnectionClosed as error:
            raise ClientClosed(str(error)) from None

    async def close(self) -> None:
        await self.websocket.close()
        await asyncio.gather(self.reader, return_exceptions=True)

    async def _read(self, index: int, sink: FrameSink) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for frame in self.websocket:
                if isinstance(frame, str):
                    sink(index, frame)


class PicowsClient(Client, WSListener):
    """picows: frames are parsed in Cython and handed over in a callback, with no task per connection."""

    def __init__(self, index: int, sink: FrameSink) -> None:
        super().__init__()
        self.index = index
        self.sink = sink
        self.transport: WSTransport | None = None
        self._close_code: int | None = None
        self._fragments: list[bytes] = []

    @classmethod
    async def open(cls, url: str, headers: dict[str, str], index: int, sink: FrameSink) -> Self:
        _, listener = await ws_connect(
            lambda: cls(index, sink),
            url,
            extra_headers=headers,
            websocket_handshake_timeout=60,
            max_frame_size=MAX_FRAME_BYTES,
        )
        assert isinstance(listener, cls)
        return listener

    @property
    def close_code(self) -> int | None:
        return self._close_code

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type is WSMsgType.CLOSE:
            self._close_code = frame.get_close_code().value
            transport.send_close(frame.get_close_code())
            transport.disconnect()
        elif frame.msg_type is WSMsgType.PING:
            transport.send_pong(frame.get_payload_as_bytes())
        elif frame.msg_type is WSMsgType.TEXT and frame.fin:
            self.sink(self.index, frame.get_payload_as_utf8_text())
        elif frame.msg_type in (WSMsgType.TEXT, WSMsgType.CONTINUATION):
            self._fragments.append(frame.get_payload_as_bytes())
            if frame.fin:
                text, self._fragments = b"".join(self._fragments).decode(), []
                self.sink(self.index, text)

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        if self._close_code is None:
            self._close_code = 1006

    async def send(self, text: str) -> None:
        transport = self.transport
        if transport is None or transport.is_disconnected:
            raise ClientClosed(f"closed with {self.close_code}")
        transport.send(WSMsgType.TEXT, text.encode())

    async def close(self) -> None:
        transport = self.transport
        if transport is not None and not transport.is_disconnected:
            transport.send_close(WSCloseCode.OK)
            transport.disconnect()
            with contextlib.suppress(Exception):
                await transport.wait_disconnected()


class LoadGenerator:
    def __init__(self) -> None:
        self.clients: list[Client] = []
        self.frames = 0
        self.events = 0
        self.last_frame = perf_counter()
        self.phase: PhaseRecord | None = None
        self.phase_start = (0, 0)
        """The frames and events received before the phase began."""

    async def connect(
        self,
        clients: list[dict[str, str | None]],
        concurrency: int,
        compression: bool,
        library: str = "picows",
    ) -> Any:
        if library not in ("picows", "websockets"):
            raise ValueError(f"unknown client library {library!r}")
        if compression and library == "picows":
            raise ValueError("picows does not offer permessage-deflate: use websockets for compression")
        slots = asyncio.Semaphore(concurrency)
        handshakes_ms: list[float] = []

        async def open_client(index: int, url: str, token: str | None) -> Client:
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            async with slots:
                started = perf_counter()
                try:
                    if library == "picows":
                        return await PicowsClient.open(url, headers, index, self._received)
                    return await WebsocketsClient.open(url, headers, compression, index, self._received)
                finally:
                    handshakes_ms.append(round((perf_counter() - started) * 1000, 3))

        first = len(self.clients)
        opened = await asyncio.gather(
            *(open_client(first + offset, str(c["url"]), c["token"]) for offset, c in enumerate(clients))
        )
        self.clients.extend(opened)
        self.last_frame = perf_counter()  # what arrived is still to be read: `settle` waits for it
        return {"connected": len(opened), "handshakes_ms": handshakes_ms}

    async def settle(self, quiet: float, within: float) -> Any:
        deadline = perf_counter() + within
        idle = perf_counter() - self.last_frame
        while idle < quiet and perf_counter() < deadline:
            await asyncio.sleep(quiet - idle)
            idle = perf_counter() - self.last_frame  # a frame may have come meanwhile
        return {"frames": self.frames, "events": self.events}

    async def expect(self, phase: str, count: int) -> Any:
        self.phase = PhaseRecord(phase, count, len(self.clients))
        self.phase_start = (self.frames, self.events)
        return {}

    async def publish(
        self, phase: str, count: int, rate: float | None, window: int, size: int, quiet: float
    ) -> Any:
        record = self.phase
        if record is None:
            raise RuntimeError("publish without expect")
        publisher = self.clients[0]
        first_send = sent = perf_counter()
        sent_count, closed = 0, None
        try:
            for sequence in range(count):
                if rate is not None:
                    await asyncio.sleep(max(0.0, first_send + sequence / rate - perf_counter()))
                else:
                    await self._await_echoes(record, sequence + 1 - window, quiet)
                sent = perf_counter()
                text = f"{phase}:{sequence}:{sent:.6f}:".ljust(size, "x")
                await publisher.send(orjson.dumps({"type": "chat.message", "text": text}).decode())
                if sequence == 0:
                    first_send = sent
                sent_count += 1
        except ClientClosed as error:
            closed = str(error)  # the messages not sent are counted as lost
        return {"first_send": first_send, "last_send": sent, "sent": sent_count, "closed": closed}

    @staticmethod
    async def _await_echoes(record: PhaseRecord, echoes: int, quiet: float) -> None:
        """Wait until the publisher has its own `echoes` first messages back, or none came for `quiet`."""
        while record.echoes < echoes:
            record.echoed.clear()
            try:
                await asyncio.wait_for(record.echoed.wait(), quiet)
            except TimeoutError:
                return  # lost: keep sending rather than stall the phase

    async def collect(self, quiet: float, within: float) -> Any:
        record = self.phase
        if record is None:
            raise RuntimeError("collect without expect")
        deadline = perf_counter() + within
        progress, progress_at = -1, perf_counter()
        while not record.complete and perf_counter() < deadline:
            if len(record.latencies) != progress:
                progress, progress_at = len(record.latencies), perf_counter()
            elif perf_counter() - progress_at > quiet:
                break
            await asyncio.sleep(POLL_SECONDS)
        self.phase = None
        return {
            "expected": record.expected,
            "delivered": len(record.latencies),
            "duplicates": record.duplicates,
            "latencies_ms": [round(latency * 1000, 3) for latency in record.latencies],
            "first_arrival": record.first_arrival,
            "last_arrival": record.last_arrival,
            "closes": self._closes(),
            "frames": self.frames - self.phase_start[0],
            "events": self.events - self.phase_start[1],
        }

    async def disconnect(self) -> Any:
        clients, self.clients = self.clients, []
        await asyncio.gather(*(client.close() for client in clients), return_exceptions=True)
        return {}

    def _closes(self) -> dict[str, int]:
        """Close codes of the clients the server closed, and how many each."""
        codes = Counter(str(client.close_code) for client in self.clients if client.close_code is not None)
        return dict(codes)

    def _received(self, client: int, frame: str) -> None:
        """Count a frame and each event in it; record those of the phase."""
        now = perf_counter()
        self.frames += 1
        self.last_frame = now
        record = self.phase
        for line in frame.split("\n"):
            self.events += 1
            message = orjson.loads(line)
            if "type" not in message:  # fastapi-distributed-websocket's frames hold the event in `data`
                message = message.get("data", {})
            if record is None or message.get("type") != "chat.message":
                continue
            phase, sequence, sent, _ = message["text"].split(":", 3)
            if phase == record.name:
                record.record(client, int(sequence), float(sent), now)


async def serve() -> None:
    raise_open_files_limit()
    generator = LoadGenerator()
    operations: dict[str, Callable[..., Awaitable[Any]]] = {
        "connect": generator.connect,
        "settle": generator.settle,
        "expect": generator.expect,
        "publish": generator.publish,
        "collect": generator.collect,
        "disconnect": generator.disconnect,
    }
    loop = asyncio.get_running_loop()
    commands = asyncio.StreamReader(limit=STDIN_LINE_LIMIT)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(commands), sys.stdin)
    while line := await commands.readline():
        arguments = orjson.loads(line)
        operation = operations[arguments.pop("op")]
        try:
            reply = await operation(**arguments)
        except Exception as error:  # noqa: BLE001 - reported to the orchestrator, which stops the run
            reply = {"error": f"{type(error).__name__}: {error}"}
        sys.stdout.buffer.write(orjson.dumps(reply) + b"\n")
        sys.stdout.buffer.flush()
    await generator.disconnect()


if __name__ == "__main__":
    uvloop.run(serve())
