"""Frames written through a middleware that wraps `send` in a context variable, as OpenTelemetry's ASGI
instrumentation does: a write that has to wait for the socket is finished in the context it began in."""

from __future__ import annotations

import logging
from contextvars import ContextVar

import pytest
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.types import Message as ASGIMessage

from {{ cookiecutter.package_name }}.realtime import WebSocketManager

from .support import library_endpoint, send_through_a_stall, serve, stalling_client

FRAMES = 120
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
        async with serve([], app=app) as url, stalling_client(url, "paused") as client:
            await send_through_a_stall(manager, client, "paused", FRAMES)
    assert [record.getMessage() for record in caplog.records if record.levelno >= logging.ERROR] == []
