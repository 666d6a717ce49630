"""Clients that do not read, on a real process: first one, then fifty at once, in a busy room.

A speaker says a long message every `SPEAK_INTERVAL`, heard by five readers. Then one client joins the room
and never reads; then fifty more at once. Each fills its buffers and its outbound queue and is closed with
1013, which it sees once it reads again (within the server's close timeout; one that never does is dropped).
All the while the readers receive every message, in order, and the process's memory grows by no more than
what the queues and buffers hold. The readers' latency in each phase is printed: on a machine shared with
other work it varies too much from one second to the next to be compared within a test.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import statistics
import time
from collections.abc import Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from ..processes import ProcessGroup, wait_until
from .support import Instance, create_room, resident_bytes, start_sqlite_instance

pytestmark = [pytest.mark.slow, pytest.mark.heavy]

READERS = 5
CROWD = 50
QUEUE_SIZE = 32  # WS_OUTBOUND_QUEUE_SIZE, an eighth of the default: a stalled client overflows sooner
SPEAK_INTERVAL = 0.03
WARM_UP_MESSAGES = 30
PHASE_MESSAGES = 100
MAX_MESSAGES_PER_PHASE = 600
TEXT = "\N{GRINNING FACE}" * 3990  # with its number, about the longest message: 16 kB in UTF-8
# A client that does not read offers a small window and small segments: the server's kernel then buffers a
# few hundred kilobytes for it, not the megabytes it lets a fast loopback connection have.
RECEIVE_BUFFER_BYTES = 16 * 1024
SEGMENT_BYTES = 1024
CLOSE_TIMEOUT = 15.0
MEMORY_BOUND_BYTES = 64 * 1024 * 1024


@dataclass
class Reader:
    """A room connection that records when each numbered message arrives."""

    websocket: ClientConnection
    arrivals: dict[int, float] = field(default_factory=dict)
    errors: list[dict[str, Any]] = field(default_factory=list)
    in_room: asyncio.Event = field(default_factory=asyncio.Event)
    """Set at its `presence.state`: from then on, every message said reaches it."""

    async def read(self) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for raw in self.websocket:
                frame = json.loads(raw)
                if frame["type"] == "presence.state":
                    self.in_room.set()
                elif frame["type"] == "chat.message":
                    self.arrivals[int(frame["text"].removeprefix(TEXT))] = time.monotonic()
                elif frame["type"] == "error":
                    self.errors.append(frame)

    def missing(self, said: int) -> str:
        """What this reader did not hear of the `said` messages, and why it may have stopped."""
        gaps = [number for number in range(1, said + 1) if number not in self.arrivals]
        closed = self.websocket.close_code
        return f"{len(gaps)} missing {gaps[:10]}, closed {closed}, errors {self.errors[:3]}"


@dataclass
class Phase:
    """The messages said in one part of the test, when each was said, and the process's memory at most."""

    name: str
    said: dict[int, float] = field(default_factory=dict)
    peak_memory: int = 0

    def latencies(self, readers: list[Reader]) -> list[float]:
        return [reader.arrivals[number] - at for number, at in self.said.items() for reader in readers]


async def close_code(websocket: ClientConnection) -> int | None:
    """Read until the server closes; the code it closed with."""
    with contextlib.suppress(ConnectionClosed):
        async with asyncio.timeout(CLOSE_TIMEOUT):
            while True:
                await websocket.recv()
    return websocket.close_code


async def heard_everything(readers: list[Reader], said: int) -> bool:
    return all(len(reader.arrivals) == said for reader in readers)


async def slow_consumers_closed(http: httpx.AsyncClient) -> float:
    for family in text_string_to_metric_families((await http.get("/metrics")).text):
        for sample in family.samples:
            if sample.name == "realtime_slow_consumer_closes_total":
                return sample.value
    return 0.0


@pytest.fixture
def instance(tmp_path: Path) -> Iterator[Instance]:
    with ProcessGroup(tmp_path) as group:
        instance = start_sqlite_instance(
            group,
            tmp_path,
            "crowded",
            users=["speaker", "reader", "staller"],
            ws_outbound_queue_size=str(QUEUE_SIZE),
            ws_rate_limit_per_second="1000",
            ws_rate_limit_burst="1000",
            ws_max_connections_per_user=str(1 + CROWD),  # every client that does not read is "staller"
        )
        with httpx.Client(base_url=instance.base_url, timeout=10) as http:
            create_room(http, instance.tokens["speaker"], "crowded")
        yield instance


async def test_clients_that_do_not_read_are_closed_with_1013_and_the_others_keep_up(
    instance: Instance,
) -> None:
    url = instance.ws("/ws/rooms/crowded")
    pid = instance.server.process.pid
    said = 0
    phases: list[Phase] = []
    async with AsyncExitStack() as stack, httpx.AsyncClient(base_url=instance.base_url, timeout=10) as http:

        async def join(username: str, **options: Any) -> ClientConnection:
            # Uncompressed, a message costs its full size in every buffer on the way.
            return await stack.enter_async_context(
                connect(url, additional_headers=instance.headers(username), compression=None, **options)
            )

        async def stall() -> ClientConnection:
            """Join without reading: the client library stops taking frames off the socket after one."""
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER_BYTES)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, SEGMENT_BYTES)
            sock.setblocking(False)
            await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", instance.server.port))
            return await join("staller", sock=sock, max_queue=1)

        async def speak(name: str, *, until_closed: int = 0, at_least: int = PHASE_MESSAGES) -> Phase:
            """Say at least `at_least` numbered messages, and more until `until_closed` clients in all
            were closed as too slow."""
            nonlocal said
            phase = Phase(name)
            while len(phase.said) < MAX_MESSAGES_PER_PHASE:
                said += 1
                phase.said[said] = time.monotonic()
                await speaker.send(json.dumps({"type": "chat.message", "text": f"{TEXT}{said}"}))
                await asyncio.sleep(SPEAK_INTERVAL)
                phase.peak_memory = max(phase.peak_memory, resident_bytes(pid))
                if len(phase.said) >= at_least and await slow_consumers_closed(http) >= until_closed:
                    return phase
            raise AssertionError(f"{name}: fewer than {until_closed} clients were closed")

        speaker = await join("speaker")
        readers = [Reader(speaker)] + [Reader(await join("reader")) for _ in range(READERS)]
        reading = [asyncio.create_task(reader.read()) for reader in readers]
        async with asyncio.timeout(CLOSE_TIMEOUT):
            await asyncio.gather(*(reader.in_room.wait() for reader in readers))
        await speak("warm-up", at_least=WARM_UP_MESSAGES)
        phases.append(await speak("undisturbed"))
        baseline_memory = resident_bytes(pid)
        lone = await stall()
        phases.append(await speak("one client not reading", until_closed=1))
        lone_code = await close_code(lone)
        crowd = [await stall() for _ in range(CROWD)]
        phases.append(await speak(f"{CROWD} clients not reading", until_closed=1 + CROWD))
        crowd_codes = await asyncio.gather(*(close_code(websocket) for websocket in crowd))
        try:
            await wait_until(lambda: heard_everything(readers, said), within=CLOSE_TIMEOUT)
        except TimeoutError:
            pytest.fail(f"of {said} messages: " + "; ".join(reader.missing(said) for reader in readers))
        for task in reading:
            task.cancel()

    assert lone_code == 1013
    assert crowd_codes == [1013] * CROWD
    for reader in readers:
        assert list(reader.arrivals) == list(range(1, said + 1))
    print(
        f"\nclients that do not read: {said} messages of {len(TEXT.encode())} bytes, {len(readers)} readers"
    )
    undisturbed = next(phase for phase in phases if phase.name == "undisturbed")
    reference = statistics.quantiles(undisturbed.latencies(readers), n=20)
    for phase in phases:
        quantiles = statistics.quantiles(phase.latencies(readers), n=20)
        growth = phase.peak_memory - baseline_memory
        print(
            f"  {phase.name}: {len(phase.said)} messages, latency p50 {quantiles[9] * 1000:.0f} ms "
            f"({quantiles[9] / reference[9]:.1f}x undisturbed), p95 {quantiles[18] * 1000:.0f} ms "
            f"({quantiles[18] / reference[18]:.1f}x); memory {growth / 2**20:+.1f} MiB at most"
        )
        assert growth < MEMORY_BOUND_BYTES
