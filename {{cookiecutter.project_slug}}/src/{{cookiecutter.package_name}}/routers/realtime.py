"""WebSocket routes: each connection is served by a consumer of `consumers/`.

They are plain Starlette routes, and what a consumer needs comes from the app's state: a FastAPI WebSocket
route keeps its dependency solving, its two exit stacks and what they refer to for as long as the socket
lives, about 3 KB a connection. The AsyncAPI document (`realtime.asyncapi`) describes them instead of OpenAPI.
"""

from __future__ import annotations

from fastapi import APIRouter, WebSocket

from ..consumers.chat import RoomConsumer, RoomPresence
{%- if cookiecutter.use_notifications == "y" %}
from ..consumers.notifications import NotificationConsumer
{%- endif %}
from ..deps import get_app_settings, get_manager, get_session_factory

router = APIRouter(tags=["realtime"])


async def chat_room(websocket: WebSocket) -> None:
    """A chat room; `?since=<seq>` replays the messages after that seq first."""
    presence: RoomPresence = websocket.app.state.room_presence
    consumer = RoomConsumer(
        websocket,
        get_manager(websocket),
        room=websocket.path_params["room"],
        settings=get_app_settings(websocket),
        session_factory=get_session_factory(websocket),
        presence=presence,
    )
    await consumer.run()


router.add_websocket_route("/ws/rooms/{room}", chat_room)
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


router.add_websocket_route("/ws/notifications", notifications)
{%- endif %}
