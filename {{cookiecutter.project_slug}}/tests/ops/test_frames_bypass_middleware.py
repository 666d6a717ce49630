"""A WebSocket's frames pass through none of the app's middlewares: they act on the handshake only. The
frames an app's endpoint writes are handed on by them in plain calls; those the engine writes, once the app
declared the server's `send` (`ServerSend`, as the consumer routes' lane does), reach the server without
them, and the metrics count them all the same. Under the app's own WebSocket protocol, the engine's frames
do not even pass through the server's `send`: the protocol writes them at once."""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.types import Message, Receive, Scope, Send
from starlette.websockets import WebSocket
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.asyncio.client import connect

from {{ cookiecutter.package_name }} import middleware as app_middleware
from {{ cookiecutter.package_name }}.observability import (
    MetricsMiddleware,
    RequestIdMiddleware,
    TrafficMetrics,
    context,
    metrics,
)
from {{ cookiecutter.package_name }}.realtime import ServerSend, WebSocketManager
from {{ cookiecutter.package_name }}.websocket_protocol import FrameWritingProtocol

from ..processes import serve_in_loop

MIDDLEWARE_FILES = {Path(module.__file__ or "") for module in (app_middleware, context, metrics)}
FRAMES = 3


async def endpoint(websocket: WebSocket) -> None:
    await websocket.accept()
    for number in range(FRAMES):
        await websocket.send_text(f"frame {number}")
    await websocket.close()


async def engine_endpoint(websocket: WebSocket) -> None:
    manager = WebSocketManager("frames", "memory://")
    await manager.startup()
    try:
        connection = await manager.new_connection(websocket)
        for number in range(FRAMES):
            await connection.send_text(f"frame {number}")
        await connection.close()
    finally:
        await manager.shutdown()


def instrumented_app(registry: CollectorRegistry, websocket_endpoint: Any = endpoint) -> Starlette:
    app = Starlette(routes=[WebSocketRoute("/ws", websocket_endpoint)])
    app.add_middleware(app_middleware.InstanceHeaderMiddleware, instance="app1")
    app.add_middleware(MetricsMiddleware, metrics=TrafficMetrics(registry))
    app.add_middleware(RequestIdMiddleware)
    return app


def between_endpoint_and_server() -> list[str]:
    """The functions of the middlewares' modules between the endpoint's send and the server's `send`."""
    found = []
    for frame in inspect.stack()[1:]:
        if frame.function == "endpoint":
            return found
        if Path(frame.filename) in MIDDLEWARE_FILES:
            found.append(frame.function)
    raise AssertionError("the endpoint is not on the stack")


async def receive_connect() -> Message:
    return {"type": "websocket.connect"}


def assert_frames_counted(registry: CollectorRegistry) -> None:
    assert registry.get_sample_value("websocket_messages_sent_total", {"route": "/ws"}) == FRAMES
    sent_bytes = registry.get_sample_value("websocket_sent_bytes_total", {"route": "/ws"})
    assert sent_bytes == len("frame 0") * FRAMES


def websocket_scope() -> Scope:
    return {
        "type": "websocket",
        "path": "/ws",
        "raw_path": b"/ws",
        "root_path": "",
        "scheme": "ws",
        "query_string": b"",
        "headers": [(b"x-request-id", b"conn-9")],
        "server": ("127.0.0.1", 8000),
        "client": ("127.0.0.1", 50000),
        "subprotocols": [],
        "asgi": {"version": "3.0"},
    }


async def test_frames_reach_the_server_with_no_middleware_on_the_stack() -> None:
    registry = CollectorRegistry()
    sent: list[Message] = []
    middleware_frames_on_stack: list[str] = []

    async def send(message: Message) -> None:
        sent.append(message)
        if message["type"] == "websocket.send":
            middleware_frames_on_stack.extend(between_endpoint_and_server())

    await instrumented_app(registry)(websocket_scope(), receive_connect, send)

    accept, *frames, close = sent
    assert accept["type"] == "websocket.accept"
    assert (b"x-request-id", b"conn-9") in accept["headers"]
    assert (b"x-instance", b"app1") in accept["headers"]
    assert [frame["text"] for frame in frames] == [f"frame {number}" for number in range(FRAMES)]
    assert close["type"] == "websocket.close"
    assert middleware_frames_on_stack == []
    assert_frames_counted(registry)  # all the same


@pytest.mark.parametrize("declared", [True, False])
async def test_the_engine_writes_its_frames_to_the_declared_server_send(
    declared: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Declared, the middlewares' `send`s see the accept and the close, no frame; else every message."""
    registry = CollectorRegistry()
    app = instrumented_app(registry, engine_endpoint)
    seen_by_metrics: list[str] = []
    counting_send = metrics._CountingWebSocketSend.__call__

    def watched(self: Any, message: Message) -> Any:
        seen_by_metrics.append(message["type"])
        return counting_send(self, message)

    monkeypatch.setattr(metrics._CountingWebSocketSend, "__call__", watched)
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    async def lane(scope: Scope, receive: Receive, send: Send) -> None:
        if declared:
            ServerSend.declare(scope, send)
        await app(scope, receive, send)

    await lane(websocket_scope(), receive_connect, send)

    assert [message["type"] for message in sent] == (
        ["websocket.accept"] + ["websocket.send"] * FRAMES + ["websocket.close"]
    )
    assert [message["text"] for message in sent[1:-1]] == [f"frame {number}" for number in range(FRAMES)]
    frames_seen = FRAMES if not declared else 0
    assert seen_by_metrics == ["websocket.accept"] + ["websocket.send"] * frames_seen + ["websocket.close"]
    assert_frames_counted(registry)


async def fanout_endpoint(websocket: WebSocket) -> None:
    """The engine's fan-out to this socket: the first frame, then, once the client has it (the connection's
    writer now waits), the others, which a round of writes writes; closed once the client has them all."""
    manager = WebSocketManager("frames", "memory://")
    await manager.startup()
    try:
        connection = await manager.new_connection(websocket)
        await manager.group_add("room", connection)
        for number in range(FRAMES):
            await manager.group_send("room", {"type": "frame", "number": number})
            if number == 0:
                await websocket.receive_text()
        await websocket.receive_text()
        await connection.close()
    finally:
        await manager.shutdown()


@pytest.mark.parametrize("protocol", [FrameWritingProtocol, WebSocketsSansIOProtocol])
async def test_under_the_app_protocol_the_engine_frames_are_written_past_the_server_send(
    protocol: type[WebSocketsSansIOProtocol], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The frames of a fan-out reach the client in order and are counted, whichever the protocol; only under
    the app's do they skip the server's `send`, which still gets the accept and the close."""
    registry = CollectorRegistry()
    app = instrumented_app(registry, fanout_endpoint)
    server_send = WebSocketsSansIOProtocol.send
    seen_by_server: list[str] = []

    async def watched(self: WebSocketsSansIOProtocol, message: Any) -> None:
        seen_by_server.append(message["type"])
        await server_send(self, message)

    monkeypatch.setattr(WebSocketsSansIOProtocol, "send", watched)

    async def lane(scope: Scope, receive: Receive, send: Send) -> None:
        ServerSend.declare(scope, send)
        await app(scope, receive, send)

    served = serve_in_loop(lane, ws=protocol, ws_per_message_deflate=False)  # as `serve` runs the app
    async with served as base_url, connect(f"{base_url}/ws".replace("http", "ws")) as client:
        frames = [await client.recv()]
        await client.send("got it")
        frames += [await client.recv() for _ in range(FRAMES - 1)]
        await client.send("thanks")
        await client.wait_closed()

    assert [json.loads(frame) for frame in frames] == [{"type": "frame", "number": n} for n in range(FRAMES)]
    frames_seen = FRAMES if protocol is WebSocketsSansIOProtocol else 0
    assert seen_by_server == ["websocket.accept"] + ["websocket.send"] * frames_seen + ["websocket.close"]
    assert registry.get_sample_value("websocket_messages_sent_total", {"route": "/ws"}) == FRAMES
    sent_bytes = registry.get_sample_value("websocket_sent_bytes_total", {"route": "/ws"})
    assert sent_bytes == sum(len(frame) for frame in frames)
