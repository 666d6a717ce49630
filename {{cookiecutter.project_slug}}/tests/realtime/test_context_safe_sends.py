"""Frames written through a middleware that wraps `send` in a context variable, as OpenTelemetry's ASGI
instrumentation does: a write that has to wait for the socket is finished in the context it began in."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from contextvars import ContextVar

import pytest
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.types import Message as ASGIMessage
from websockets.asyncio.client import connect

from {{ cookiecutter.package_name }}.realtime import Message, WebSocketManager

from .support import eventually, library_endpoint, serve

FRAMES = 120
FILLER = "x" * 100_000
sending: ContextVar[str | None] = ContextVar("sending", default=None)


class SendInContext:
    """Sets `sending` around each ASGI send and resets it with the token, which fails in another context."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_in_context(message: ASGIMessage) -> None:
            token = sending.set(message["type"])
            try:
                await send(message)
            finally:
                sending.reset(token)

        await self.app(scope, receive, send_in_context)


async def test_frames_under_backpressure_through_a_context_setting_middleware_all_arrive(
    broker_url: str, broker_channel: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR)
    async with WebSocketManager(
        broker_channel, broker_url, queue_size=FRAMES + 10, close_timeout=10
    ) as manager:
        app = SendInContext(Starlette(routes=[WebSocketRoute("/ws", library_endpoint(manager))]))
        async with serve([], app=app) as url:
            raw = socket.socket()
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            raw.connect(("127.0.0.1", int(url.rsplit(":", 1)[1])))
            async with connect(
                f"{url}/ws?id=paused", sock=raw, max_queue=1, max_size=None, compression=None
            ) as client:
                await eventually(lambda: len(manager) == 1)
                (connection,) = manager.connections_by_id("paused")
                most_pending = 0
                for number in range(FRAMES):
                    await manager.send_by_conn_id(Message(type="n", conn_id="paused", data=[number, FILLER]))
                    await asyncio.sleep(0)
                    most_pending = max(most_pending, connection.pending)
                assert most_pending > 0  # the socket stopped taking frames for a while

                async with asyncio.timeout(30):
                    received = [json.loads(await client.recv())["data"][0] for _ in range(FRAMES)]
                assert received == list(range(FRAMES))
                assert connection.close_code is None
                assert manager.stats.frames_dropped == 0
    assert [record.getMessage() for record in caplog.records if record.levelno >= logging.ERROR] == []
