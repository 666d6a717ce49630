"""Helpers of the realtime tests: a uvicorn server in the test's event loop, and WebSocket clients."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.routing import BaseRoute, WebSocketRoute
from starlette.websockets import WebSocket
from websockets.asyncio.client import ClientConnection, connect

from {{ cookiecutter.package_name }}.realtime import Message, WebSocketManager

Endpoint = Callable[[WebSocket], Awaitable[None]]
FILLER = "x" * 100_000


def bound_socket() -> socket.socket:
    """A socket bound to a free port of 127.0.0.1."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    return listener


@asynccontextmanager
async def serve(routes: dict[str, Endpoint] | list[BaseRoute], app: Any = None) -> AsyncIterator[str]:
    """Serve WebSocket endpoints with uvicorn in this event loop; yields the `ws://127.0.0.1:<port>` URL."""
    if app is None:
        if isinstance(routes, dict):
            routes = [WebSocketRoute(path, endpoint) for path, endpoint in routes.items()]
        app = Starlette(routes=routes)
    listener = bound_socket()
    port = listener.getsockname()[1]
    config = uvicorn.Config(app, lifespan="off", log_level="warning", timeout_graceful_shutdown=2)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[listener]))
    try:
        async with asyncio.timeout(10):
            while not server.started:
                if task.done():
                    task.result()
                await asyncio.sleep(0.01)
        yield f"ws://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait({task}, timeout=10)
        listener.close()


@asynccontextmanager
async def stalling_client(url: str, conn_id: str) -> AsyncIterator[ClientConnection]:
    """A client of `url`/ws as `conn_id` that the server's writes soon stall on: a tiny receive window, one
    frame held unread, no compression."""
    raw = socket.socket()
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    raw.connect(("127.0.0.1", int(url.rsplit(":", 1)[1])))
    async with connect(
        f"{url}/ws?id={conn_id}", sock=raw, max_queue=1, max_size=None, compression=None
    ) as client:
        yield client


async def send_through_a_stall(
    manager: WebSocketManager, client: ClientConnection, conn_id: str, frames: int
) -> None:
    """Send `frames` numbered frames of `FILLER` to the stalling `client`, and check that the socket stopped
    taking them for a while, and that they all arrive in order without closing or dropping anything."""
    await eventually(lambda: len(manager) == 1)
    (connection,) = manager.connections_by_id(conn_id)
    most_pending = 0
    for number in range(frames):
        await manager.send_by_conn_id(Message(type="n", conn_id=conn_id, data=[number, FILLER]))
        await asyncio.sleep(0)
        most_pending = max(most_pending, connection.pending)
    # The later frames waited in the queue behind the stalled one.
    assert most_pending > 0

    async with asyncio.timeout(30):
        received = [json.loads(await client.recv())["data"][0] for _ in range(frames)]
    assert received == list(range(frames))
    assert connection.close_code is None
    assert manager.stats.frames_dropped == 0


async def receive_json(client: ClientConnection, seconds: float = 5.0) -> Any:
    async with asyncio.timeout(seconds):
        return json.loads(await client.recv())


async def send_json(client: ClientConnection, frame: Any) -> None:
    await client.send(json.dumps(frame))


def websocket_url(base_url: str) -> str:
    """`ws://...` for an `http://...` base URL."""
    return "ws" + base_url.removeprefix("http")


async def hello(client: ClientConnection, seconds: float = 10.0) -> dict[str, Any]:
    """The first frame of `upstream_app`'s WebSocket: what it received with the handshake."""
    greeting: dict[str, Any] = await receive_json(client, seconds)
    return greeting


async def close_received(client: ClientConnection, seconds: float = 10.0) -> tuple[int | None, str | None]:
    """The code and reason the peer closed `client` with (1006 and "" if it sent no close frame)."""
    async with asyncio.timeout(seconds):
        await client.wait_closed()
    return client.close_code, client.close_reason


async def eventually(condition: Callable[[], bool], seconds: float = 5.0) -> None:
    """Wait until `condition()` holds; fail after `seconds`."""
    async with asyncio.timeout(seconds):
        while not condition():  # noqa: ASYNC110 - the state polled here has no event to wait on
            await asyncio.sleep(0.01)


def library_endpoint(manager: WebSocketManager) -> Endpoint:
    """The library's own protocol: `?id=` sets the connection id, each `?group=` joins a group."""

    async def endpoint(websocket: WebSocket) -> None:
        connection = await manager.new_connection(websocket, websocket.query_params.get("id"))
        for group in websocket.query_params.getlist("group"):
            await manager.group_add(group, connection)
        async for message in connection.iter_json():
            await manager.receive(connection, message)
        await manager.remove_connection(connection)

    return endpoint
