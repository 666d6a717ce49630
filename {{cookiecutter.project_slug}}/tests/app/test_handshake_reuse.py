"""What a handshake reads from the database is reused for `WS_HANDSHAKE_REUSE_SECONDS`. A user's tabs
connecting together read their account once: a new socket takes the account of a socket on the instance,
open or still shaking hands, with the same user and token key; one whose handshake was refused lends it no
more. A revocation the instance is told of ends that at once; one made in the database directly, within
that time and the periodic account check. A public room is read once for the sockets that join it
meanwhile; a private room's membership is read for each."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from typing import Any

import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from httpx import ASGITransport, AsyncClient
from sqlalchemy import event, update

from {{ cookiecutter.package_name }}.consumers.chat import RoomConsumer
from {{ cookiecutter.package_name }}.db.models import User, new_token_key
from {{ cookiecutter.package_name }}.main import create_app
from {{ cookiecutter.package_name }}.settings import Settings

from ..processes import serve_in_loop
from .support import create_tables
from .ws_support import close_code, connect_ws, create_room, log_in, receive_type

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)

TABS = 5


@asynccontextmanager
async def running(
    settings: Settings, reuse_seconds: float
) -> AsyncIterator[tuple[FastAPI, AsyncClient, str]]:
    """The app with `WS_HANDSHAKE_REUSE_SECONDS` = `reuse_seconds`, an HTTP client, and its `ws://` URL."""
    await create_tables(settings.database_url)
    app = create_app(settings.model_copy(update={"ws_handshake_reuse_seconds": reuse_seconds}))
    async with (
        LifespanManager(app),
        AsyncClient(transport=ASGITransport(app=app), base_url="http://test") as http,
        serve_in_loop(app, lifespan="off") as base_url,
    ):
        yield app, http, base_url.replace("http://", "ws://", 1)


@contextmanager
def row_reads(app: FastAPI, table: str = "users") -> Iterator[list[str]]:
    """The statements that read rows of `table` while the block runs."""
    reads: list[str] = []

    def record(_connection: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement.lstrip().startswith(f"SELECT {table}.id,"):
            reads.append(statement)

    engine = app.state.engine.sync_engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        yield reads
    finally:
        event.remove(engine, "before_cursor_execute", record)


@pytest.mark.parametrize(("reuse_seconds", "expected_reads"), [(3600, 1), (0, TABS)])
async def test_the_tabs_of_a_user_read_the_account_once_within_the_reuse_time(
    settings: Settings, reuse_seconds: float, expected_reads: int
) -> None:
    async with running(settings, reuse_seconds) as (app, http, ws_url), AsyncExitStack() as tabs:
        alice = await log_in(http, "alice")
        await create_room(http, alice, "lobby")
        with row_reads(app) as reads:
            for _ in range(TABS):
                tab = await tabs.enter_async_context(connect_ws(f"{ws_url}/ws/rooms/lobby", alice))
                await receive_type(tab, "presence.state")
        assert len(reads) == expected_reads


async def test_tabs_connecting_at_once_share_one_read(settings: Settings) -> None:
    async with running(settings, 3600) as (app, http, ws_url), AsyncExitStack() as tabs:
        alice = await log_in(http, "alice")
        await create_room(http, alice, "lobby")
        with row_reads(app) as reads:
            url = f"{ws_url}/ws/rooms/lobby"
            opened = await asyncio.gather(
                *(tabs.enter_async_context(connect_ws(url, alice)) for _ in range(TABS))
            )
            for tab in opened:
                await receive_type(tab, "presence.state")
        assert len(reads) == 1


async def test_the_accounts_of_users_connecting_at_once_are_read_together(settings: Settings) -> None:
    """The first read is held until every handshake has asked: the accounts not in it go in one more query."""
    users = 8
    async with running(settings, 3600) as (app, http, ws_url), AsyncExitStack() as sockets:
        tokens = [await log_in(http, f"user{index}") for index in range(users)]
        await create_room(http, tokens[0], "lobby")
        watch, asked, all_asked = app.state.account_watch, [], asyncio.Event()
        account, read_many = watch.account, watch._reading.read_many

        async def counted(claims: Any) -> Any:
            asked.append(claims)
            if len(asked) == users:
                all_asked.set()
            return await account(claims)

        async def held_until_all_asked(holders: Any) -> Any:
            await asyncio.wait_for(all_asked.wait(), 10)
            return await read_many(holders)

        watch.account, watch._reading.read_many = counted, held_until_all_asked
        url = f"{ws_url}/ws/rooms/lobby"
        with row_reads(app) as reads:
            opened = await asyncio.gather(
                *(sockets.enter_async_context(connect_ws(url, token)) for token in tokens)
            )
            for websocket in opened:
                await receive_type(websocket, "presence.state")
        assert len(reads) <= 2


async def test_a_handshake_takes_the_account_of_one_still_on_its_way(settings: Settings) -> None:
    """The second tab begins its handshake once the first has read the account, before it is accepted."""
    async with running(settings, 3600) as (app, http, ws_url), AsyncExitStack() as tabs:
        alice = await log_in(http, "alice")
        await create_room(http, alice, "lobby")
        rooms, first_read, go_on = app.state.room_reads, asyncio.Event(), asyncio.Event()
        visible_room = rooms.visible_room

        async def held_at_the_room(**arguments: Any) -> Any:
            if not first_read.is_set():
                first_read.set()
                await go_on.wait()
            return await visible_room(**arguments)

        rooms.visible_room = held_at_the_room
        url = f"{ws_url}/ws/rooms/lobby"
        with row_reads(app) as reads:
            first = asyncio.create_task(tabs.enter_async_context(connect_ws(url, alice)))
            await first_read.wait()
            second = await tabs.enter_async_context(connect_ws(url, alice))
            go_on.set()
            for tab in (await first, second):
                await receive_type(tab, "presence.state")
        assert len(reads) == 1


async def test_a_refused_handshake_lends_its_account_to_none(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not even while something still holds its consumer: its user may have no socket left to be told of a
    revocation through."""
    kept: list[RoomConsumer] = []
    connect = RoomConsumer.connect

    async def keeping(consumer: RoomConsumer) -> None:
        kept.append(consumer)
        await connect(consumer)

    monkeypatch.setattr(RoomConsumer, "connect", keeping)
    async with running(settings, 3600) as (app, http, ws_url):
        alice = await log_in(http, "alice")
        await create_room(http, alice, "lobby")
        with row_reads(app) as reads:
            async with connect_ws(f"{ws_url}/ws/rooms/nowhere", alice) as refused:
                assert await close_code(refused) == 1008
            async with connect_ws(f"{ws_url}/ws/rooms/lobby", alice) as tab:
                await receive_type(tab, "presence.state")
        assert len(kept) == 2
        assert len(reads) == 2


async def test_a_revocation_made_in_the_database_is_closed_by_the_account_check(settings: Settings) -> None:
    """Nobody told the instance: a tab opened meanwhile may take the account still; the check closes both."""
    async with running(settings, 3600) as (app, http, ws_url):
        alice = await log_in(http, "alice")
        await create_room(http, alice, "lobby")
        async with connect_ws(f"{ws_url}/ws/rooms/lobby", alice) as first:
            await receive_type(first, "presence.state")
            async with app.state.session_factory() as session:
                revoke = update(User).where(User.username == "alice").values(token_key=new_token_key())
                await session.execute(revoke)
                await session.commit()
            async with connect_ws(f"{ws_url}/ws/rooms/lobby", alice) as second:
                await receive_type(second, "presence.state")
                assert await app.state.account_watch.check() == 2
                assert await close_code(first) == await close_code(second) == 1008
        async with connect_ws(f"{ws_url}/ws/rooms/lobby", alice) as refused:
            assert await close_code(refused) == 1008
            assert refused.close_reason == "Invalid or expired token, or its user no longer exists"


async def test_a_revocation_the_instance_is_told_of_ends_the_reuse_at_once(settings: Settings) -> None:
    async with running(settings, 3600) as (_app, http, ws_url):
        alice = await log_in(http, "alice")
        await create_room(http, alice, "lobby")
        async with connect_ws(f"{ws_url}/ws/rooms/lobby", alice) as first:
            await receive_type(first, "presence.state")
            response = await http.post("/auth/logout", headers={"Authorization": f"Bearer {alice}"})
            assert response.status_code == 204, response.text
            assert await close_code(first) == 1008
        async with connect_ws(f"{ws_url}/ws/rooms/lobby", alice) as refused:
            assert await close_code(refused) == 1008
            assert refused.close_reason == "Invalid or expired token, or its user no longer exists"


@pytest.mark.parametrize(("reuse_seconds", "expected_reads"), [(3600, 1), (0, 3)])
async def test_a_public_room_is_read_once_for_the_sockets_that_join_it_meanwhile(
    settings: Settings, reuse_seconds: float, expected_reads: int
) -> None:
    async with running(settings, reuse_seconds) as (app, http, ws_url), AsyncExitStack() as sockets:
        tokens = [await log_in(http, username) for username in ("alice", "bob", "carol")]
        await create_room(http, tokens[0], "lobby")
        with row_reads(app, "rooms") as reads:
            for token in tokens:
                websocket = await sockets.enter_async_context(connect_ws(f"{ws_url}/ws/rooms/lobby", token))
                await receive_type(websocket, "presence.state")
        assert len(reads) == expected_reads


async def test_a_private_room_lets_in_its_members_only_however_recent_its_read(settings: Settings) -> None:
    async with running(settings, 3600) as (_app, http, ws_url):
        alice, mallory = await log_in(http, "alice"), await log_in(http, "mallory")
        await create_room(http, alice, "den", private=True)
        async with connect_ws(f"{ws_url}/ws/rooms/den", alice) as member:
            await receive_type(member, "presence.state")
            async with connect_ws(f"{ws_url}/ws/rooms/den", mallory) as intruder:
                assert await close_code(intruder) == 1008
