"""The service with its chat rooms joined as plain groups: what a delivery costs without recovery.

The app, its settings and its storage are the same (every message still gets its room's `seq`); only the
room consumer differs, calling `group_add` where it calls `join_recoverable`: a `chat.message` goes to each
member as a group event without a cursor (no seq check, no replay after `since`, no healing). The bench's
`-unsequenced` scenarios run it beside the service in the same run; it gives up the guarantee, so it is
never deployed.
"""

from __future__ import annotations

from fastapi import FastAPI

from {{ cookiecutter.package_name }}.consumers.chat import RoomConsumer
from {{ cookiecutter.package_name }}.main import create_app as create_service_app
from {{ cookiecutter.package_name }}.realtime import HistoryProvider

__all__ = ["UnsequencedRoomConsumer", "create_app"]


class UnsequencedRoomConsumer(RoomConsumer):
    """`RoomConsumer` in a plain group: live messages only, as they come."""

    async def join_recoverable(
        self, group: str, history: HistoryProvider, *, event_type: str, since: int | None = None
    ) -> None:
        await self.group_add(group)


def create_app() -> FastAPI:
    """The service's app, its room route serving `UnsequencedRoomConsumer`."""
    app = create_service_app()
    app.state.room_consumer = UnsequencedRoomConsumer
    return app
