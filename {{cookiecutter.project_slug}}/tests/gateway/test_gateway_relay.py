"""The gateway's bytes relay: frame headers read as bytes pass, and what a side hears when the other goes."""

from __future__ import annotations

import asyncio
import base64
import os
import signal
import socket
from urllib.parse import urlsplit

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus
from websockets.frames import Close, Frame, Opcode

from {{ cookiecutter.package_name }}.gateway.websocket_relay import FrameReader
from {{ cookiecutter.package_name }}.observability.metrics import FrameCounts

from ..processes import ProcessGroup, ServerProcess, wait_until
from ..realtime.support import close_received, hello, websocket_url
from .gateway_support import TIMEOUT, running_gateway, start_upstream

FRAMES = [
    Frame(Opcode.TEXT, b"hello"),
    Frame(Opcode.PING, b"are you there"),
    Frame(Opcode.BINARY, bytes(126)),  # a 16-bit length
    Frame(Opcode.TEXT, b"x" * 70_000, fin=False),  # a 64-bit length, and a message in two frames
    Frame(Opcode.CONT, b"y" * 10),
    Frame(Opcode.PONG, b""),
    Frame(Opcode.CLOSE, Close(1000, "bye").serialize()),
]
MESSAGES = 3
PAYLOAD_BYTES = 5 + 126 + 70_000 + 10


@pytest.mark.parametrize("masked", [True, False], ids=["from the client", "from the upstream"])
@pytest.mark.parametrize("chunk", [1, 2, 3, 7, 1_000, 100_000])
def test_frame_headers_are_found_however_the_bytes_are_split(masked: bool, chunk: int) -> None:
    stream = b"".join(frame.serialize(mask=masked) for frame in FRAMES)
    close_starts = len(stream) - len(FRAMES[-1].serialize(mask=masked))
    counts = FrameCounts()
    reader = FrameReader(counts, to_client=not masked)
    for start in range(0, len(stream), chunk):
        assert reader.feed(stream[start : start + chunk]) is None
        assert reader.close_seen is (start + chunk > close_starts + 1)  # once its first two bytes are in
    assert reader.close_seen
    assert reader.between_frames
    if masked:
        assert (counts.received, counts.bytes_received, counts.sent) == (MESSAGES, PAYLOAD_BYTES, 0)
    else:
        assert (counts.sent, counts.bytes_sent, counts.received) == (MESSAGES, PAYLOAD_BYTES, 0)


def test_a_frame_over_the_limit_is_found_at_its_header() -> None:
    small, large = Frame(Opcode.TEXT, b"ok").serialize(mask=True), Frame(Opcode.TEXT, bytes(300))
    reader = FrameReader(FrameCounts(), to_client=False, max_length=200)
    stream = small + large.serialize(mask=True)
    assert reader.feed(stream[: len(small) + 1]) is None  # one byte of its header: its length is not in yet
    assert reader.feed(stream[len(small) + 1 :]) == -1  # it began one byte before this chunk
    assert FrameReader(FrameCounts(), to_client=False, max_length=200).feed(stream) == len(small)


async def test_a_refusal_reaches_the_client_with_its_status_and_body(
    upstream_pair: tuple[ServerProcess, ServerProcess],
) -> None:
    async with running_gateway([upstream_pair[0].base_url]) as gateway:
        with pytest.raises(InvalidStatus) as refused:
            await connect(websocket_url(gateway) + "/ws/refuse")
    response = refused.value.response
    assert (response.status_code, response.body) == (401, b"members only")


async def test_pings_pongs_and_compressed_frames_cross_between_client_and_upstream(
    upstream_pair: tuple[ServerProcess, ServerProcess],
) -> None:
    async with (
        running_gateway([upstream_pair[0].base_url]) as gateway,
        connect(websocket_url(gateway) + "/ws/echo", compression="deflate") as websocket,
    ):
        await hello(websocket)
        assert websocket.response is not None
        assert "permessage-deflate" in websocket.response.headers["Sec-WebSocket-Extensions"]
        pong = await websocket.ping(b"through")
        await pong
        await websocket.send("compressed " * 1_000)
        assert await websocket.recv() == "compressed " * 1_000


async def test_a_vanished_client_is_closed_upstream_with_1001(
    upstream_pair: tuple[ServerProcess, ServerProcess],
) -> None:
    upstream = upstream_pair[1]
    async with (
        httpx.AsyncClient(base_url=upstream.base_url, timeout=TIMEOUT) as http,
        running_gateway([upstream.base_url]) as gateway,
    ):
        before = len((await http.get("/websocket-closes")).json())
        websocket = await connect(websocket_url(gateway) + "/ws/echo")
        await hello(websocket)
        websocket.transport.abort()  # no close frame: as a client whose network went away

        async def upstream_was_closed() -> bool:
            return len((await http.get("/websocket-closes")).json()) > before

        await wait_until(upstream_was_closed, within=TIMEOUT)
        closes = (await http.get("/websocket-closes")).json()
    assert closes[before] == {"code": 1001, "reason": "client connection lost"}


async def test_a_stopping_gateway_tells_its_clients_to_reconnect(
    upstream_pair: tuple[ServerProcess, ServerProcess],
) -> None:
    async with running_gateway([upstream_pair[0].base_url]) as gateway:
        websocket = await connect(websocket_url(gateway) + "/ws/echo")
        await hello(websocket)
    assert await close_received(websocket) == (1012, "")


async def test_an_upstream_gone_silent_is_pinged_then_its_client_closed_with_1014(
    process_group: ProcessGroup,
) -> None:
    """A stopped process keeps its connections open, as a host that vanished without resetting them."""
    silent = start_upstream(process_group, "silent")
    async with running_gateway([silent.base_url], ws_ping_interval=0.5) as gateway:
        websocket = await connect(websocket_url(gateway) + "/ws/echo")
        await hello(websocket)
        os.kill(silent.process.pid, signal.SIGSTOP)
        try:
            assert await close_received(websocket, seconds=TIMEOUT) == (1014, "upstream timed out")
        finally:
            os.kill(silent.process.pid, signal.SIGCONT)


async def test_a_client_that_stops_reading_holds_up_its_upstream_not_the_gateways_memory(
    upstream_pair: tuple[ServerProcess, ServerProcess],
) -> None:
    """128 MB sent to a client that reads nothing: the upstream is made to wait, and goes on once it reads."""
    count, size = 2_000, 64 * 1024
    upstream = upstream_pair[0]
    async with (
        httpx.AsyncClient(base_url=upstream.base_url, timeout=TIMEOUT) as http,
        running_gateway([upstream.base_url]) as gateway,
    ):
        reader, writer = await raw_websocket(gateway, "/ws/echo")
        writer.write(Frame(Opcode.TEXT, f"flood:{count}:{size}".encode()).serialize(mask=True))
        progress: list[int] = []

        async def upstream_stalled() -> bool:
            progress.append((await http.get("/flood-progress")).json()["sent"])
            return len(progress) > 10 and len(set(progress[-10:])) == 1

        await wait_until(upstream_stalled, within=60)
        # Socket buffers (at most 4 MB to send and 32 MB to receive on Linux) and the gateway's hold a part.
        assert progress[-1] < count // 2

        async def upstream_going_on() -> bool:
            await reader.read(1024 * 1024)
            return bool((await http.get("/flood-progress")).json()["sent"] > progress[-1])

        await wait_until(upstream_going_on, within=60)
        writer.close()


async def raw_websocket(base_url: str, path: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A WebSocket opened by hand, on a socket with a small receive buffer that nothing reads unless asked."""
    host, port = urlsplit(base_url).hostname, urlsplit(base_url).port
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (host, port))
    reader, writer = await asyncio.open_connection(sock=sock)
    key = base64.b64encode(os.urandom(16))
    head = [b"GET " + path.encode() + b" HTTP/1.1", b"Host: " + f"{host}:{port}".encode()]
    head += [b"Upgrade: websocket", b"Connection: Upgrade", b"Sec-WebSocket-Version: 13"]
    writer.write(b"\r\n".join([*head, b"Sec-WebSocket-Key: " + key, b"", b""]))
    assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 101 ")
    return reader, writer
