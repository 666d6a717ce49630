"""The consumer routes' WebSockets are served by the app's own middlewares and the route's endpoint: nothing
of FastAPI's per-request machinery stays suspended under an open socket, while a middleware added to the
app, after `create_app` too, acts on each handshake, and any other WebSocket route gets the full stack."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI, WebSocket
from httpx import ASGITransport, AsyncClient
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from websockets.asyncio.client import connect

from {{ cookiecutter.package_name }}.main import create_app
from {{ cookiecutter.package_name }}.settings import Settings

from ..processes import serve_in_loop
from .support import create_tables
from .ws_support import connect_ws, create_room, log_in, receive_type

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)

# What FastAPI's and Starlette's full stack would keep under a socket, below the app's own `__call__`.
REQUEST_LAYERS = frozenset(
    {
        "ServerErrorMiddleware.__call__",
        "ExceptionMiddleware.__call__",
        "AsyncExitStackMiddleware.__call__",
        "Router.__call__",
        "WebSocketRoute.handle",
    }
)


class StampHandshake:
    """A middleware as a user would write one: it names itself in every handshake's answer."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def stamping_send(message: Message) -> None:
            if message["type"] == "websocket.accept":
                message["headers"] = [*message.get("headers", ()), (b"x-stamp", b"yes")]
            await send(message)

        await self.app(scope, receive, stamping_send if scope["type"] == "websocket" else send)


@pytest.fixture
async def stamped_app(settings: Settings) -> AsyncIterator[FastAPI]:
    """The app with a middleware and a plain WebSocket route added after `create_app`, running."""
    await create_tables(settings.database_url)
    app = create_app(settings)
    app.add_middleware(StampHandshake)

    @app.websocket("/echo")
    async def echo(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_text(await websocket.receive_text())
        await websocket.close()

    async with LifespanManager(app):
        yield app


def suspended_under_consumer() -> list[str]:
    """The coroutines, outermost first, that the server's task of the one open consumer socket awaits."""
    for task in asyncio.all_tasks():
        chain = []
        coroutine = task.get_coro()
        while coroutine is not None:
            chain.append(getattr(coroutine, "__qualname__", type(coroutine).__name__))
            coroutine = getattr(coroutine, "cr_await", None)
        if "ConsumerEndpoint.__call__" in chain:
            return chain
    raise AssertionError("no task serves a consumer")


async def test_a_room_socket_keeps_only_the_apps_middlewares_and_its_endpoint(stamped_app: FastAPI) -> None:
    async with (
        AsyncClient(transport=ASGITransport(app=stamped_app), base_url="http://test") as http,
        serve_in_loop(stamped_app, lifespan="off") as base_url,
    ):
        token = await log_in(http, "alice")
        await create_room(http, token, "lane")
        url = base_url.replace("http://", "ws://", 1) + "/ws/rooms/lane"
        async with connect_ws(url, token) as websocket:
            await receive_type(websocket, "presence.state")
            chain = suspended_under_consumer()
            assert websocket.response is not None
            assert websocket.response.headers["X-Stamp"] == "yes"
            assert websocket.response.headers["X-Instance"] == stamped_app.state.settings.instance_name
            assert websocket.response.headers["X-Request-ID"]
    assert "StampHandshake.__call__" in chain
    assert REQUEST_LAYERS.isdisjoint(chain), chain


async def test_any_other_websocket_route_is_served_by_the_full_stack(stamped_app: FastAPI) -> None:
    async with serve_in_loop(stamped_app, lifespan="off") as base_url:
        websocket = await connect(base_url.replace("http://", "ws://", 1) + "/echo")
        async with websocket:
            await websocket.send("ping")
            assert await websocket.recv() == "ping"
        assert websocket.response is not None
        assert websocket.response.headers["X-Stamp"] == "yes"
