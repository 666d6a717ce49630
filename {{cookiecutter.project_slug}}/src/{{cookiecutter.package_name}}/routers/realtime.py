"""WebSocket routes: each connection is served by a consumer of `consumers/`.

What a consumer needs comes from the app's state rather than from dependencies: FastAPI keeps what it
solved for a WebSocket's dependencies, and their bookkeeping, for as long as the socket lives.
"""

from __future__ import annotations

from fastapi import APIRouter, WebSocket

from ..consumers.chat import RoomConsumer, RoomPresence
{%- if cookiecutter.use_notifications == "y" %}
from ..consumers.notifications import NotificationConsumer
{%- endif %}
from ..deps import get_app_settings, get_manager, get_session_factory

router = APIRouter(tags=["realtime"])


@router.websocket("/ws/rooms/{room}")
async def chat_room(websocket: WebSocket, room: str) -> None:
    """A chat room; `?since=<seq>` replays the messages after that seq first."""
    presence: RoomPresence = websocket.app.state.room_presence
    consumer = RoomConsumer(
        websocket,
        get_manager(websocket),
        room=room,
        settings=get_app_settings(websocket),
        session_factory=get_session_factory(websocket),
        presence=presence,
        rooms=websocket.app.state.room_reads,
    )
    await consumer.run()
{%- if cookiecutter.use_notifications == "y" %}


@router.websocket("/ws/notifications")
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
