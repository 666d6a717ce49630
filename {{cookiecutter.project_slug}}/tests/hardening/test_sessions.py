"""Sessions end on open sockets too, on real processes: two instances on one database and one Redis.

Disabling a user (the `disable-user` command), logging out and changing the password revoke the user's
tokens and close their sockets on every instance at once with 1008 `Session ended: ...`; a token that expires
is closed on the next frame, and a change made straight in the database by the periodic account check. A
deleted user's token never signs in the next user given the same id.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import httpx
import pytest

from {{ cookiecutter.package_name }}.security.tokens import create_access_token

from ..app.support import PASSWORD, create_tables
from ..app.ws_support import close_code, connect_ws, instance_env, receive_type, send_json
from ..processes import SOURCE_DIR, ProcessGroup, ServerProcess
from .support import sign_in

pytestmark = pytest.mark.slow

CHECK_INTERVAL = 0.5  # ACCOUNT_CHECK_INTERVAL_SECONDS of the second instance; the first never checks
ENDED_WITHIN = 10.0


@dataclass
class Stack:
    told: ServerProcess  # learns of account changes only through the broker (or the next frame)
    checking: ServerProcess  # also checks the accounts every CHECK_INTERVAL
    env: dict[str, str]
    database: Path

    def token_key(self, username: str) -> str:
        with sqlite3.connect(self.database) as connection:
            row = connection.execute("SELECT token_key FROM users WHERE username = ?", (username,)).fetchone()
        return str(row[0])

    def execute(self, statement: str, *parameters: object) -> None:
        with sqlite3.connect(self.database) as connection:
            connection.execute(statement, parameters)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[Stack]:
    directory = tmp_path_factory.mktemp("sessions")
    database = directory / "sessions.db"
    database_url = f"sqlite+aiosqlite:///{database}"
    asyncio.run(create_tables(database_url))
    env = instance_env(database_url, redis_url, f"sessions-{secrets.token_hex(4)}")
    with ProcessGroup(directory) as group:
        told = group.start_app("told", env={**env, "ACCOUNT_CHECK_INTERVAL_SECONDS": "3600"})
        checking = group.start_app(
            "checking", env={**env, "ACCOUNT_CHECK_INTERVAL_SECONDS": str(CHECK_INTERVAL)}
        )
        with httpx.Client(base_url=told.base_url) as http:
            response = http.post(
                "/rooms",
                json={"name": "lobby", "title": "Lobby"},
                headers={"Authorization": f"Bearer {sign_in(http, 'root', register=False)}"},
            )
            assert response.status_code == 201, response.text
        yield Stack(told, checking, env, database)


def new_user(stack: Stack, username: str) -> str:
    with httpx.Client(base_url=stack.told.base_url) as http:
        return sign_in(http, username)


def cli(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    python_path = os.pathsep.join(filter(None, [str(SOURCE_DIR), os.environ.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, "-m", "{{ cookiecutter.package_name }}", *args],
        env={**os.environ, **stack.env, "PYTHONPATH": python_path},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def test_a_disabled_user_is_closed_on_every_instance_at_once(stack: Stack) -> None:
    token = new_user(stack, "dora")
    async with (
        connect_ws(stack.told.ws_url + "/ws/rooms/lobby", token) as in_room,
        connect_ws(stack.checking.ws_url + "/ws/rooms/lobby", token) as elsewhere,
    ):
        await receive_type(in_room, "presence.state")
        await receive_type(elsewhere, "presence.state")
        disabled = cli(stack, "disable-user", "dora")
        assert disabled.returncode == 0, disabled.stderr
        assert await close_code(in_room, within=ENDED_WITHIN) == 1008
        assert in_room.close_reason is not None
        assert in_room.close_reason.startswith("Session ended")
        assert await close_code(elsewhere, within=ENDED_WITHIN) == 1008
    async with httpx.AsyncClient(base_url=stack.told.base_url) as http:
        me = await http.get("/users/me", headers={"Authorization": f"Bearer {token}"})
        assert me.status_code == 401
        denied = await http.post("/auth/token", data={"username": "dora", "password": PASSWORD})
        assert denied.status_code == 403
    assert cli(stack, "enable-user", "dora").returncode == 0
    async with httpx.AsyncClient(base_url=stack.told.base_url) as http:
        again = await http.post("/auth/token", data={"username": "dora", "password": PASSWORD})
        assert again.status_code == 200
    assert cli(stack, "disable-user", "nobody-at-all").returncode != 0


@pytest.mark.parametrize("how", ["logout", "password"])
async def test_logout_and_a_password_change_revoke_every_token_and_close_the_sockets(
    stack: Stack, how: str
) -> None:
    username = f"leaver-{how}"
    token = new_user(stack, username)
    headers = {"Authorization": f"Bearer {token}"}
    async with connect_ws(stack.checking.ws_url + "/ws/rooms/lobby", token) as websocket:
        await receive_type(websocket, "presence.state")
        async with httpx.AsyncClient(base_url=stack.told.base_url, headers=headers) as http:
            if how == "logout":
                response = await http.post("/auth/logout")
            else:
                wrong = await http.post(
                    "/auth/password", json={"current_password": "not-it-at-all", "new_password": "n" * 12}
                )
                assert wrong.status_code == 401
                response = await http.post(
                    "/auth/password", json={"current_password": PASSWORD, "new_password": "n" * 12}
                )
            assert response.status_code == 204, response.text
            assert await close_code(websocket, within=ENDED_WITHIN) == 1008
            assert (await http.get("/users/me")).status_code == 401


async def test_an_expired_token_is_closed_on_the_next_frame(stack: Stack) -> None:
    new_user(stack, "brief")
    with sqlite3.connect(stack.database) as connection:
        (user_id,) = connection.execute("SELECT id FROM users WHERE username = 'brief'").fetchone()
    token = create_access_token(
        subject=str(user_id),
        secret_key=stack.env["SECRET_KEY"],
        expires_in=timedelta(seconds=3),
        token_key=stack.token_key("brief"),
    )
    async with connect_ws(stack.told.ws_url + "/ws/rooms/lobby", token) as websocket:
        await receive_type(websocket, "presence.state")
        await asyncio.sleep(3.5)  # the token's lifetime: time itself is what this test is about
        await send_json(websocket, {"type": "chat.message", "text": "still here?"})
        assert await close_code(websocket) == 1008
        assert websocket.close_reason == "Session ended: the token expired"


async def test_a_change_made_in_the_database_is_closed_by_the_periodic_check(stack: Stack) -> None:
    token = new_user(stack, "edited")
    async with connect_ws(stack.checking.ws_url + "/ws/rooms/lobby", token) as websocket:
        await receive_type(websocket, "presence.state")
        stack.execute("UPDATE users SET is_active = 0 WHERE username = 'edited'")
        assert await close_code(websocket, within=ENDED_WITHIN) == 1008


async def test_since_with_thousands_of_digits_is_closed_with_1008(stack: Stack) -> None:
    token = new_user(stack, "counter")
    async with connect_ws(stack.told.ws_url + "/ws/rooms/lobby", token, since="9" * 5000) as websocket:
        assert await close_code(websocket) == 1008
    assert "ERROR" not in stack.told.output()


def test_a_deleted_users_token_does_not_sign_in_the_next_user_with_the_same_id(stack: Stack) -> None:
    token = new_user(stack, "ghost")
    with sqlite3.connect(stack.database) as connection:
        (ghost_id,) = connection.execute("SELECT id FROM users WHERE username = 'ghost'").fetchone()
        connection.execute("DELETE FROM users WHERE id = ?", (ghost_id,))
    heir_token = new_user(stack, "heir")
    with httpx.Client(base_url=stack.told.base_url) as http:
        heir = http.get("/users/me", headers={"Authorization": f"Bearer {heir_token}"}).json()
        assert heir["id"] == ghost_id  # SQLite gave the id again
        assert http.get("/users/me", headers={"Authorization": f"Bearer {token}"}).status_code == 401
