"""WebSocket routes: each connection is served by a consumer of `consumers/`."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, WebSocket

from ..consumers.chat import RoomConsumer
{%- if cookiecutter.use_notifications == "y" %}
from ..consumers.notifications import NotificationConsumer
{%- endif %}
from ..consumers.unsent import UnsentMessages
from ..deps import ManagerDep, SessionFactoryDep, SettingsDep

router = APIRouter(tags=["realtime"])


def get_unsent_messages(websocket: WebSocket) -> UnsentMessages:
    """The instance's chat messages stored but not yet published, held until the broker is back."""
    unsent: UnsentMessages = websocket.app.state.unsent
    return unsent


UnsentDep = Annotated[UnsentMessages, Depends(get_unsent_messages)]


@router.websocket("/ws/rooms/{room}")
async def chat_room(
    websocket: WebSocket,
    room: str,
    manager: ManagerDep,
    settings: SettingsDep,
    session_factory: SessionFactoryDep,
    unsent: UnsentDep,
) -> None:
    """A chat room; `?since=<id>` replays the messages after that id first."""
    consumer = RoomConsumer(
        websocket, manager, room=room, settings=settings, session_factory=session_factory, unsent=unsent
    )
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
