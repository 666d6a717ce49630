"""The bare relay, storing each frame first as the service stores a chat message.

Each frame received on `/ws` is posted to the service's own `db.message_log.MessageLog` (stored with the
room's next seq, in one transaction with the frames received while the one before committed) and, once
stored, written to every socket of this process in turn, as `bench.baselines.relay` writes it. Beside
`relay` and `app` in one run it tells what storing a message costs a fan-out, and so what the rest of the
service's path costs beyond it. The schema is created at start-up in a database of its own.
`BENCH_DATABASE_URL=sqlite+aiosqlite:///bench.db uvicorn bench.baselines.storing_relay:app`
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from {{ cookiecutter.package_name }}.db.message_log import MessageLog
from {{ cookiecutter.package_name }}.db.models import Base, Message, Room, User
from {{ cookiecutter.package_name }}.db.refs import RoomRecord, UserRecord
from {{ cookiecutter.package_name }}.db.session import create_engine, create_session_factory

from .relay import healthz, serve, write_to_all

DATABASE_URL = os.environ.get("BENCH_DATABASE_URL", "sqlite+aiosqlite:///bench-storing-relay.db")
UNUSABLE_HASH = "!"
"""A stored hash that no password matches: the relay's user only authors messages, it never logs in."""

engine = create_engine(DATABASE_URL)
sessions = create_session_factory(engine)
log = MessageLog(sessions)


async def storing_relay(websocket: WebSocket) -> None:
    room: RoomRecord = websocket.app.state.room  # every frame is stored in one room, as one user
    user: UserRecord = websocket.app.state.user

    async def post(text: str) -> None:
        await log.post(room, user, text, stored=write_stored, failed=not_stored)

    await serve(websocket, post)


async def write_stored(message: Message) -> None:
    await write_to_all(message.text)


async def not_stored(error: Exception) -> None:
    raise error  # logged by the log: the bench then counts the message as lost


@contextlib.asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    async with engine.begin() as connection:
        await connection.run_sync(Base.metadata.create_all)
    async with sessions() as session:
        user = User(username="relay", hashed_password=UNUSABLE_HASH)
        session.add(user)
        await session.flush()
        room = Room(name="relay", title="Relay", owner_id=user.id)
        session.add(room)
        await session.commit()
        app.state.room, app.state.user = RoomRecord.of(room), UserRecord.of(user)
    try:
        yield
    finally:
        await log.aclose(1.0)
        await engine.dispose()


app = Starlette(routes=[Route("/healthz", healthz), WebSocketRoute("/ws", storing_relay)], lifespan=lifespan)
