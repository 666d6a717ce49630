"""WebSocket routes: each connection is served by a consumer of `consumers/`.

Whatever runs around a consumer stays alive for as long as its socket is open. So the routes are
`ConsumerRoute`s, Starlette routes whose app is a `ConsumerEndpoint`, and a consumer takes what it needs
from the app's state; and the app hands their connections to a `ConsumerLane`, which runs the app's own
middlewares around the endpoint and nothing of FastAPI's per-request machinery. A FastAPI WebSocket route
would keep its dependency solving and two exit stacks (about 5 KB a connection), and the full stack its
error and exception middlewares and the router's nested handles (about 7 KB more; docs/PERFORMANCE.md).
The AsyncAPI document, not OpenAPI, describes these routes.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable

from fastapi import APIRouter, WebSocket
from starlette.applications import Starlette
from starlette.routing import BaseRoute, Match, WebSocketRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from ..consumers.chat import RoomConsumer
{%- if cookiecutter.use_notifications == "y" %}
from ..consumers.notifications import NotificationConsumer
{%- endif %}
from ..deps import get_app_settings, get_manager, get_session_factory
from ..realtime import PresenceTicks, ServerSend


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


class ConsumerLane:
    """An app's ASGI stack once it has started: the connections of the consumer routes go through the app's
    own middlewares only, everything else through the stack FastAPI built (`full`).

    The middlewares added with `add_middleware` (request id, metrics, instance header, header limits, and
    any of yours) act on every handshake and close, as they do on HTTP requests; the lane has instances of
    its own. The frames the engine writes go to the server's `send` past them (`ServerSend`): a middleware
    that is to see each frame does not belong in front of a socket that fans out to thousands.
    FastAPI's error and exception middlewares, its dependency exit stack and the router's nested handles
    are left out: a consumer turns its own errors into close codes and needs none of them.
    """

    def __init__(self, app: Starlette, routes: Iterable[BaseRoute]) -> None:
        if app.middleware_stack is None:
            raise RuntimeError("a ConsumerLane takes the stack of an app that has started")
        self.full = app.middleware_stack
        self.router = app.router
        self.routes = [route for route in routes if isinstance(route, ConsumerRoute)]
        lane: ASGIApp = _call_endpoint
        for cls, args, kwargs in reversed(app.user_middleware):
            lane = cls(lane, *args, **kwargs)
        self.lane = lane

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        if scope["type"] == "websocket" and self._claims(scope):
            scope["router"] = self.router
            ServerSend.declare(scope, send)
            return self.lane(scope, receive, send)
        return self.full(scope, receive, send)

    def _claims(self, scope: Scope) -> bool:
        """Whether `scope` is a connection to one of the routes; if so, it gets the route's endpoint and
        path parameters, as Starlette's router would give them."""
        for route in self.routes:
            match, child_scope = route.matches(scope)
            if match is Match.FULL:
                scope.update(child_scope)
                return True
        return False


def _call_endpoint(scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
    """The matched route's endpoint, called in a plain call: no frame of its own under the socket."""
    endpoint: ConsumerEndpoint = scope["endpoint"]
    return endpoint(scope, receive, send)


async def chat_room(websocket: WebSocket) -> None:
    """A chat room; `?since=<seq>` replays the messages after that seq first."""
    presence: PresenceTicks = websocket.app.state.room_presence
    consumer_class: type[RoomConsumer] = websocket.app.state.room_consumer
    consumer = consumer_class(
        websocket,
        get_manager(websocket),
        room=websocket.path_params["room"],
        settings=get_app_settings(websocket),
        session_factory=get_session_factory(websocket),
        presence=presence,
        rooms=websocket.app.state.room_reads,
        log=websocket.app.state.message_log,
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
