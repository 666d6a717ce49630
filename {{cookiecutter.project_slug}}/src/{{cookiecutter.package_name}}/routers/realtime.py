"""WebSocket routes: each connection is served by a consumer of `consumers/`.

Whatever a route runs around a consumer stays alive for as long as its socket is open, so the routes are
`ConsumerRoute`s, Starlette routes whose app is a `ConsumerEndpoint`, and a consumer takes what it needs
from the app's state. A FastAPI WebSocket route would keep its dependency solving and two exit stacks,
and a Starlette function endpoint an exception wrapper that a consumer does not need: about 5 KB a
connection together (docs/PERFORMANCE.md). The AsyncAPI document, not OpenAPI, describes these routes.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import APIRouter, WebSocket
from starlette.routing import WebSocketRoute
from starlette.types import Receive, Scope, Send

from ..consumers.chat import RoomConsumer
{%- if cookiecutter.use_notifications == "y" %}
from ..consumers.notifications import NotificationConsumer
{%- endif %}
from ..deps import get_app_settings, get_manager, get_session_factory
from ..realtime import PresenceTicks


class ConsumerEndpoint:
    """The ASGI app of a `ConsumerRoute`: `serve(websocket)` runs the socket's consumer, whose `run()` turns
    every error into a close code itself, so nothing else is wrapped around it.

    It knows its `route` for the metrics: FastAPI serves the Starlette routes of an included router through
    copies that do not record themselves in the scope, and adding a key to it there would grow the scope's
    table, which lives as long as the socket.
    """

    def __init__(self, serve: Callable[[WebSocket], Awaitable[None]]) -> None:
        self.serve = serve
        self.route: WebSocketRoute | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.serve(WebSocket(scope, receive, send))


class ConsumerRoute(WebSocketRoute):
    """A WebSocket route served by a `ConsumerEndpoint`."""

    def __init__(self, path: str, serve: Callable[[WebSocket], Awaitable[None]]) -> None:
        endpoint = ConsumerEndpoint(serve)
        super().__init__(path, endpoint, name=serve.__name__)
        endpoint.route = self


async def chat_room(websocket: WebSocket) -> None:
    """A chat room; `?since=<seq>` replays the messages after that seq first."""
    presence: PresenceTicks = websocket.app.state.room_presence
    consumer = RoomConsumer(
        websocket,
        get_manager(websocket),
        room=websocket.path_params["room"],
        settings=get_app_settings(websocket),
        session_factory=get_session_factory(websocket),
        presence=presence,
        rooms=websocket.app.state.room_reads,
    )
    await consumer.run()
{%- if cookiecutter.use_notifications == "y" %}


async def notifications(websocket: WebSocket) -> None:
    """The user's notifications, and MQTT-style topics."""
    consumer = NotificationConsumer(
        websocket,
        get_manager(websocket),
        settings=get_app_settings(websocket),
        session_factory=get_session_factory(websocket),
    )
    await consumer.run()
{%- endif %}


router = APIRouter(
    tags=["realtime"],
    routes=[
        ConsumerRoute("/ws/rooms/{room}", chat_room),
{%- if cookiecutter.use_notifications == "y" %}
        ConsumerRoute("/ws/notifications", notifications),
{%- endif %}
    ],
)
