"""PostgreSQL cut off from a running instance, then back, through a proxy that drops every connection.

While it is cut, `/readyz` names the database, a chat message is refused with an `error` frame and neither
stored nor sent to the room, the clients stay connected, and the REST routes answer 503. Once it is back, the
instance recovers by itself (its pool reconnects): the next message is stored and sent, and nothing refused
was stored.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from urllib.parse import urlsplit

import asyncpg
import httpx
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus

from ..app.support import create_tables
from ..app.ws_support import (
    assert_silent,
    connect_ws,
    create_room,
    instance_env,
    log_in,
    receive_type,
    send_json,
)
from ..processes import ProcessGroup, wait_until
from .faults import TcpProxy

pytestmark = pytest.mark.slow

RECOVERY_TIMEOUT = 15.0  # the pool reconnects at the first checkout after the database is back


async def readiness(http: httpx.AsyncClient) -> tuple[int, dict[str, str]]:
    """`/readyz`'s status and checks; (0, {}) when the request fails (the server dropped the connection)."""
    try:
        response = await http.get("/readyz")
    except httpx.TransportError:
        return 0, {}
    checks: dict[str, str] = response.json()["checks"]
    return response.status_code, checks


async def ready(http: httpx.AsyncClient) -> bool:
    return (await readiness(http))[0] == 200


async def admission(url: str, token: str) -> str:
    """How a new connection fares: `admitted`, `close <code>`, or `HTTP <status>` (handshake refused)."""
    try:
        async with connect_ws(url, token) as websocket:
            try:
                await receive_type(websocket, "presence.state")
            except ConnectionClosed:
                return f"close {websocket.close_code}"
            return "admitted"
    except InvalidStatus as refused:
        return f"HTTP {refused.response.status_code}"


async def stored_texts(database_url: str, room: str) -> list[str]:
    connection = await asyncpg.connect(database_url.replace("postgresql+asyncpg://", "postgresql://", 1))
    try:
        rows = await connection.fetch(
            "SELECT m.text FROM messages m JOIN rooms r ON r.id = m.room_id WHERE r.name = $1 ORDER BY m.id",
            room,
        )
    finally:
        await connection.close()
    return [row["text"] for row in rows]


async def test_sends_are_refused_while_the_database_is_cut_and_accepted_once_it_is_back(
    postgres_database_url: str, broker_channel: str, process_group: ProcessGroup
) -> None:
    await create_tables(postgres_database_url)
    database = urlsplit(postgres_database_url)
    assert database.hostname is not None
    assert database.port is not None
    room = f"cut-{secrets.token_hex(3)}"
    with TcpProxy(database.hostname, database.port) as proxy:
        proxied_url = postgres_database_url.replace(
            database.netloc, f"{database.username}@127.0.0.1:{proxy.port}"
        )
        env = instance_env(proxied_url, "memory://", broker_channel)
        instance = await asyncio.to_thread(process_group.start_app, "app1", env=env)
        url = f"{instance.ws_url}/ws/rooms/{room}"
        async with httpx.AsyncClient(base_url=instance.base_url, timeout=10) as http:
            alice, bob = await log_in(http, f"alice-{room}"), await log_in(http, f"bob-{room}")
            await create_room(http, alice, room)
            async with connect_ws(url, alice) as alice_ws, connect_ws(url, bob) as bob_ws:
                await receive_type(alice_ws, "presence.state")
                await receive_type(bob_ws, "presence.state")
                await send_json(alice_ws, {"type": "chat.message", "text": "before"})
                assert (await receive_type(bob_ws, "chat.message"))["text"] == "before"

                proxy.cut()
                status, checks = await readiness(http)
                assert status == 503
                assert checks["database"].startswith("error"), checks
                await send_json(alice_ws, {"type": "chat.message", "text": "during"})
                refusal = await receive_type(alice_ws, "error")
                assert refusal["code"] == "unavailable", refusal
                await assert_silent(bob_ws, "chat.message")
                newcomer = await admission(url, bob)
                assert newcomer != "admitted"
                history = await http.get(
                    f"/rooms/{room}/messages", headers={"Authorization": f"Bearer {bob}"}
                )
                assert history.status_code == 503, history.text
                assert history.json() == {"detail": "The database is unavailable; try again later"}
                assert history.headers["Retry-After"] == "5"

                proxy.restore()
                restored_at = time.monotonic()
                await wait_until(lambda: ready(http), within=RECOVERY_TIMEOUT)
                ready_in = time.monotonic() - restored_at
                await send_json(alice_ws, {"type": "chat.message", "text": "after"})
                assert (await receive_type(bob_ws, "chat.message"))["text"] == "after"
                assert await admission(url, bob) == "admitted"
    print(f"\ndatabase cut: a send gets {refusal['code']}, a new connection {newcomer}")
    print(f"ready again {ready_in:.2f}s after the database is back")
    assert await stored_texts(postgres_database_url, room) == ["before", "after"]
    assert instance.running
