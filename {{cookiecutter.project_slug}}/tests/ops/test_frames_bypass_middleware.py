"""A WebSocket's frames pass through none of the app's middlewares: they act on the handshake only."""

from __future__ import annotations

import inspect
from pathlib import Path

from prometheus_client import CollectorRegistry
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.types import Message
from starlette.websockets import WebSocket

from {{ cookiecutter.package_name }} import middleware as app_middleware
from {{ cookiecutter.package_name }}.observability import (
    MetricsMiddleware,
    RequestIdMiddleware,
    TrafficMetrics,
    context,
    metrics,
)

MIDDLEWARE_FILES = {Path(module.__file__ or "") for module in (app_middleware, context, metrics)}
FRAMES = 3


async def endpoint(websocket: WebSocket) -> None:
    await websocket.accept()
    for number in range(FRAMES):
        await websocket.send_text(f"frame {number}")
    await websocket.close()


def instrumented_app(registry: CollectorRegistry) -> Starlette:
    app = Starlette(routes=[WebSocketRoute("/ws", endpoint)])
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


async def test_frames_reach_the_server_with_no_middleware_on_the_stack() -> None:
    registry = CollectorRegistry()
    sent: list[Message] = []
    middleware_frames_on_stack: list[str] = []

    async def receive() -> Message:
        return {"type": "websocket.connect"}

    async def send(message: Message) -> None:
        sent.append(message)
        if message["type"] == "websocket.send":
            middleware_frames_on_stack.extend(between_endpoint_and_server())

    scope = {
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
    await instrumented_app(registry)(scope, receive, send)

    accept, *frames, close = sent
    assert accept["type"] == "websocket.accept"
    assert (b"x-request-id", b"conn-9") in accept["headers"]
    assert (b"x-instance", b"app1") in accept["headers"]
    assert [frame["text"] for frame in frames] == [f"frame {number}" for number in range(FRAMES)]
    assert close["type"] == "websocket.close"
    assert middleware_frames_on_stack == []
    # The frames are counted all the same.
    assert registry.get_sample_value("websocket_messages_sent_total", {"route": "/ws"}) == FRAMES
    sent_bytes = registry.get_sample_value("websocket_sent_bytes_total", {"route": "/ws"})
    assert sent_bytes == len("frame 0") * FRAMES
