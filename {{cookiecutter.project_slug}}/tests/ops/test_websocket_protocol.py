"""The app's WebSocket protocol (`FrameWritingProtocol`, which `serve` runs): frames written at once, framed
once for every socket, as a client reads them; declined for the server's `send` whenever that `send` must do
more than write, with nothing lost nor out of order."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket
from uvicorn.importer import import_from_string
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.asyncio.client import connect
from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.protocol import State
from websockets.uri import parse_uri

from {{ cookiecutter.package_name }} import cli
from {{ cookiecutter.package_name }}.realtime import WRITE_NOW, ServerSend, WebSocketManager, WriteNow
from {{ cookiecutter.package_name }}.websocket_protocol import FrameWritingProtocol, PreparedFrames

from ..processes import serve_in_loop, wait_until

FRAMES: list[str | bytes] = ["first", "h\u00e9llo \u2713", b"\x00\x01\xff", "x" * 70_000]


def read_as_a_client(wire: bytes) -> list[tuple[Opcode, bytes]]:
    client = ClientProtocol(parse_uri("ws://127.0.0.1/"), state=State.OPEN, max_size=None)
    client.receive_data(wire)
    frames = [event for event in client.events_received() if isinstance(event, Frame)]
    return [(frame.opcode, bytes(frame.data)) for frame in frames]


@pytest.mark.parametrize("length", [0, 125, 126, 65_535, 65_536])
def test_a_prepared_frame_is_what_a_client_reads_whatever_its_length(length: int) -> None:
    prepared = PreparedFrames()
    text, data = "a" * length, bytes(range(256)) * (length // 256) + bytes(length % 256)
    assert read_as_a_client(prepared.wire(text)) == [(Opcode.TEXT, text.encode())]
    assert read_as_a_client(prepared.wire(data)) == [(Opcode.BINARY, data)]
    assert read_as_a_client(prepared.wire(FRAMES[1])) == [(Opcode.TEXT, str(FRAMES[1]).encode())]


def test_prepared_frames_keep_the_last_ones_and_none_too_large() -> None:
    prepared = PreparedFrames(entries=3, max_frame_bytes=10)
    first = prepared.wire("frame 0")
    assert prepared.wire("frame 0") is first  # framed once
    for number in range(1, 4):
        prepared.wire(f"frame {number}")
    assert len(prepared) == 3
    assert prepared.wire("frame 0") is not first  # the oldest was let go
    kept = prepared.wire("frame 3")
    assert prepared.wire("x" * 11) is not prepared.wire("x" * 11)
    assert len(prepared) == 3
    assert prepared.wire("frame 3") is kept  # a frame too large to keep pushes none out
    assert prepared.wire("alone", kept=False) is not prepared.wire("alone", kept=False)
    assert len(prepared) == 3
    assert read_as_a_client(prepared.wire("alone", kept=False)) == [(Opcode.TEXT, b"alone")]


def test_serve_runs_the_app_with_the_frame_writing_protocol() -> None:
    assert import_from_string(cli.APP_PROTOCOL) is FrameWritingProtocol


class FrameWriter:
    """An ASGI app that accepts, writes `frames` with the server's `WriteNow`, one at a time or all in one
    call (`together`), with `send` where it declines, and closes; what each `WriteNow` answered is in
    `written`."""

    def __init__(self, frames: list[str | bytes], *, together: bool = False) -> None:
        self.frames = frames
        self.together = together
        self.written: list[bool] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert (await receive())["type"] == "websocket.connect"
        await send({"type": "websocket.accept"})
        write_now: WriteNow = scope["extensions"][WRITE_NOW]
        if self.together:
            await self.write(write_now, send, *self.frames)
        else:
            for frame in self.frames:
                await self.write(write_now, send, frame)
        await send({"type": "websocket.close", "code": 1000})

    async def write(self, write_now: WriteNow, send: Send, *frames: str | bytes) -> None:
        written = write_now(*frames)
        self.written.append(written)
        if not written:
            for frame in frames:
                key = "text" if isinstance(frame, str) else "bytes"
                await send({"type": "websocket.send", key: frame})


async def received(url: str, *, compression: str | None = None) -> list[str | bytes]:
    async with connect(url, compression=compression, max_size=None) as client:
        return [message async for message in client]


async def test_frames_written_at_once_reach_the_client_whole_and_in_order() -> None:
    app = FrameWriter(FRAMES)
    async with serve_in_loop(app, ws=FrameWritingProtocol) as base_url:
        frames = await received(base_url.replace("http", "ws"))
    assert frames == FRAMES
    assert app.written == [True] * len(FRAMES)


async def test_frames_written_together_arrive_as_messages_of_their_own_in_order() -> None:
    app = FrameWriter(FRAMES, together=True)
    async with serve_in_loop(app, ws=FrameWritingProtocol) as base_url:
        frames = await received(base_url.replace("http", "ws"))
    assert frames == FRAMES
    assert app.written == [True]


async def test_with_permessage_deflate_every_frame_goes_through_send_compressed() -> None:
    app = FrameWriter(FRAMES)
    async with serve_in_loop(app, ws=FrameWritingProtocol, ws_per_message_deflate=True) as base_url:
        frames = await received(base_url.replace("http", "ws"), compression="deflate")
    assert frames == FRAMES
    assert app.written == [False] * len(FRAMES)


async def test_once_the_client_closed_nothing_is_written() -> None:
    answers: list[bool] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        message = await receive()
        assert message["type"] == "websocket.disconnect"
        answers.append(scope["extensions"][WRITE_NOW]("too late"))

    async with serve_in_loop(app, ws=FrameWritingProtocol) as base_url:
        async with connect(base_url.replace("http", "ws")) as client:
            await client.close()
        await wait_until(lambda: asyncio.sleep(0, bool(answers)))
    assert answers == [False]


class UntilDeclined(FrameWriter):
    """Numbered 16 KB frames until the socket takes no more at once (its client does not read), then
    `after` more: all of them must arrive, in order."""

    def __init__(self, *, after: int, limit: int = 4_000) -> None:
        super().__init__([])
        self.after = after
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert (await receive())["type"] == "websocket.connect"
        await send({"type": "websocket.accept"})
        write_now: WriteNow = scope["extensions"][WRITE_NOW]
        number = 0
        while all(self.written) and number < self.limit:
            await self.write(write_now, send, self.numbered(number))
            number += 1
        for following in range(number, number + self.after):
            await self.write(write_now, send, self.numbered(following))
        await send({"type": "websocket.close", "code": 1000})

    @staticmethod
    def numbered(number: int) -> str:
        return f"{number:06d}".ljust(16 * 1024, ".")


@asynccontextmanager
async def idle_client(
    base_url: str, path: str = "/"
) -> AsyncIterator[tuple[ClientProtocol, asyncio.StreamReader, asyncio.StreamWriter]]:
    """A WebSocket client that reads nothing until told to, on a socket with a small receive buffer."""
    host, port = base_url.removeprefix("http://").split(":")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (host, int(port)))
    reader, writer = await asyncio.open_connection(sock=sock)
    client = ClientProtocol(parse_uri(f"ws://{host}:{port}{path}"), max_size=None)
    client.send_request(client.connect())
    writer.write(b"".join(client.data_to_send()))
    try:
        while client.state is State.CONNECTING:
            client.receive_data(await reader.read(65_536))
        assert client.state is State.OPEN, client.handshake_exc
        yield client, reader, writer
    finally:
        writer.close()


async def test_a_frame_the_socket_cannot_take_at_once_goes_through_send_and_order_is_kept() -> None:
    app = UntilDeclined(after=20)
    async with (
        serve_in_loop(app, ws=FrameWritingProtocol) as base_url,
        idle_client(base_url) as (client, reader, _),
    ):
        await wait_until(lambda: asyncio.sleep(0, not all(app.written)), within=30)
        texts = [text[:6] for text in await read_texts(client, reader)]
    assert app.written.count(False) >= 1, "the socket took every frame at once"
    assert texts == [f"{number:06d}" for number in range(len(app.written))]


async def read_texts(
    client: ClientProtocol, reader: asyncio.StreamReader, count: int | None = None
) -> list[str]:
    """The text frames the server sends, until `count` of them arrived or the connection is closed (the
    frames that came with the handshake's response included)."""
    texts: list[str] = []
    while True:
        for event in client.events_received():
            if isinstance(event, Frame) and event.opcode is Opcode.TEXT:
                texts.append(bytes(event.data).decode())
        if client.state is not State.OPEN or (count is not None and len(texts) >= count):
            return texts
        if data := await reader.read(1 << 20):
            client.receive_data(data)
        else:
            client.receive_eof()


def frames_past_the_send_buffer(size: int) -> int:
    """Enough frames of `size` bytes to fill the largest send buffer the kernel gives a socket twice over
    (Linux's `tcp_wmem`; 4 MiB unless tuned), so that some must wait for the client to read."""
    try:
        largest = int(Path("/proc/sys/net/ipv4/tcp_wmem").read_text().split()[2])
    except (OSError, ValueError, IndexError):
        largest = 4 * 1024 * 1024
    return max(600, 2 * largest // size)


async def test_a_fanout_larger_than_the_socket_takes_at_once_arrives_whole_and_in_order(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The engine's rounds write what the socket takes at once, and the rest through the server's `send`."""
    count = frames_past_the_send_buffer(16 * 1024)
    server_send = WebSocketsSansIOProtocol.send
    through_send: list[str] = []

    async def watched(self: WebSocketsSansIOProtocol, message: Any) -> None:
        if message["type"] == "websocket.send":
            through_send.append(message["text"][:6])
        await server_send(self, message)

    monkeypatch.setattr(WebSocketsSansIOProtocol, "send", watched)

    async def endpoint(websocket: WebSocket) -> None:
        manager = WebSocketManager("fanout", "memory://", queue_size=count + 1)
        await manager.startup()
        try:
            connection = await manager.new_connection(websocket)
            await manager.group_add("room", connection)
            await connection.send_text("hello")
            await websocket.receive_text()  # the client has the first frame: the writer waits
            for number in range(count):
                await manager.group_send("room", {"type": f"{number:06d}", "padding": "." * 16 * 1024})
            await websocket.receive_text()
            await connection.close()
        finally:
            await manager.shutdown()

    async def lane(scope: Scope, receive: Receive, send: Send) -> None:
        ServerSend.declare(scope, send)
        await app(scope, receive, send)

    app = Starlette(routes=[WebSocketRoute("/ws", endpoint)])
    async with (
        serve_in_loop(lane, ws=FrameWritingProtocol, ws_per_message_deflate=False) as base_url,
        idle_client(base_url, "/ws") as (client, reader, writer),
    ):
        assert await read_texts(client, reader, 1) == ["hello"]
        client.send_text(b"go")
        writer.write(b"".join(client.data_to_send()))
        await wait_until(lambda: asyncio.sleep(0, bool(through_send)), within=30)
        events = [json.loads(text) for text in await read_texts(client, reader, count)]
        client.send_text(b"thanks")
        writer.write(b"".join(client.data_to_send()))
    assert [event["type"] for event in events] == [f"{number:06d}" for number in range(count)]
    assert 0 < len(through_send) < count, "the frames all went the same way"
