"""WebSocket routes: each connection is served by a consumer of `consumers/`."""

from __future__ import annotations

from fastapi import APIRouter, WebSocket

from ..consumers.chat import RoomConsumer
{%- if cookiecutter.use_notifications == "y" %}
from ..consumers.notifications import NotificationConsumer
{%- endif %}
from ..deps import ManagerDep, SessionFactoryDep, SettingsDep

router = APIRouter(tags=["realtime"])


@router.websocket("/ws/rooms/{room}")
async def chat_room(
    websocket: WebSocket,
    room: str,
    manager: ManagerDep,
    settings: SettingsDep,
    session_factory: SessionFactoryDep,
) -> None:
    """A chat room; `?since=<seq>` replays the messages after that seq first."""
    consumer = RoomConsumer(websocket, manager, room=room, settings=settings, session_factory=session_factory)
    await consumer.run()
{%- if cookiecutter.use_notifications == "y" %}


@router.websocket("/ws/notifications")
async def notifications(
    websocket: WebSocket, manager: ManagerDep, settings: SettingsDep, session_factory: SessionFactoryDep
) -> None:
    """The user's notifications, and MQTT-style topics."""
    consumer = NotificationConsumer(websocket, manager, settings=settings, session_factory=session_factory)
    await consumer.run()
{%- endif %}
