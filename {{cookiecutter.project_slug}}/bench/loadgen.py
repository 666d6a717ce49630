"""The load generator: one process holding many WebSocket clients, driven by JSON lines on stdin.

`bench.run` starts one or more of these (`python -m bench.loadgen`) and writes one command per line; each
is answered with one JSON line on stdout (`{"error": ...}` if it failed):

- `connect` {clients: [{url, token}], concurrency, compression}: open the clients, `concurrency` handshakes
  at a time, each with `Authorization: Bearer <token>` when it has a token -> {connected,
  handshakes_ms}, each handshake's time from its TCP connect to the server's 101.
- `settle` {quiet, within}: return once no frame has arrived for `quiet` seconds (or after `within`).
- `expect` {phase, count}: from now on, count the messages of `phase` (sequence numbers 0 to count - 1).
- `publish` {phase, count, rate, window, size, quiet}: the first client of this process sends the messages,
  `rate` a second, or flat out (`rate` null) with at most `window` of them not yet back to it
  -> {first_send, last_send, sent, closed}.
- `collect` {quiet, within}: wait until every client has every message of the phase, or none came for
  `quiet` seconds, or `within` seconds passed -> {expected, delivered, duplicates, latencies_ms,
  first_arrival, last_arrival, closes}.
- `disconnect`: close every client. End of input ends the process.

A message's text is `<phase>:<sequence>:<send time>:` padded to `size` bytes. The send time is
`time.perf_counter()`, which reads the system-wide monotonic clock on Linux, so the receiving process can
subtract it from its own reading.
"""

from __future__ import annotations

import asyncio
import contextlib
import resource
import sys
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from time import perf_counter
from typing import Any

import orjson
import uvloop
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


class LoadGenerator:
    def __init__(self) -> None:
        self.clients: list[ClientConnection] = []
        self.readers: set[asyncio.Task[None]] = set()
        self.frames = 0
        self.last_frame = perf_counter()
        self.phase: PhaseRecord | None = None

    async def connect(self, clients: list[dict[str, str | None]], concurrency: int, compression: bool) -> Any:
        slots = asyncio.Semaphore(concurrency)
        handshakes_ms: list[float] = []

        async def open_client(url: str, token: str | None) -> ClientConnection:
            headers = {"Authorization": f"Bearer {token}"} if token else None
            async with slots:
                started = perf_counter()
                try:
                    return await self._open(url, headers, compression)
                finally:
                    handshakes_ms.append(round((perf_counter() - started) * 1000, 3))

        opened = await asyncio.gather(*(open_client(str(c["url"]), c["token"]) for c in clients))
        for websocket in opened:
            reader = asyncio.create_task(self._read(len(self.clients), websocket))
            self.readers.add(reader)
            reader.add_done_callback(self.readers.discard)
            self.clients.append(websocket)
        self.last_frame = perf_counter()  # what arrived is still to be read: `settle` waits for it
        return {"connected": len(opened), "handshakes_ms": handshakes_ms}

    @staticmethod
    async def _open(url: str, headers: dict[str, str] | None, compression: bool) -> ClientConnection:
        return await connect(
            url,
            additional_headers=headers,
            compression="deflate" if compression else None,
            max_size=MAX_FRAME_BYTES,
            open_timeout=60,
            ping_interval=None,
        )

    async def settle(self, quiet: float, within: float) -> Any:
        deadline = perf_counter() + within
        idle = perf_counter() - self.last_frame
        while idle < quiet and perf_counter() < deadline:
            await asyncio.sleep(quiet - idle)
            idle = perf_counter() - self.last_frame  # a frame may have come meanwhile
        return {"frames": self.frames}

    async def expect(self, phase: str, count: int) -> Any:
        self.phase = PhaseRecord(phase, count, len(self.clients))
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
        except ConnectionClosed as error:
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
        }

    async def disconnect(self) -> Any:
        clients, self.clients = self.clients, []
        await asyncio.gather(*(client.close() for client in clients), return_exceptions=True)
        await asyncio.gather(*self.readers, return_exceptions=True)
        return {}

    def _closes(self) -> dict[str, int]:
        """Close codes of the clients the server closed, and how many each."""
        codes = Counter(str(client.close_code) for client in self.clients if client.close_code is not None)
        return dict(codes)

    async def _read(self, client: int, websocket: ClientConnection) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for frame in websocket:
                now = perf_counter()
                self.frames += 1
                self.last_frame = now
                message = orjson.loads(frame)
                record = self.phase
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
