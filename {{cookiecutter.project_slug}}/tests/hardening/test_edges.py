"""The small things an attacker tries at the edges, on real processes: NUL characters on both databases,
tokens in percent-encoded parameters under a plain `uvicorn --factory`{% if cookiecutter.use_gateway == "y" %}, and through the gateway: dot segments
towards an instance's `/metrics`, and redirects that must point at the gateway{% endif %}.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ..app.support import PASSWORD, create_tables
from ..app.ws_support import close_code, connect_ws, instance_env, receive_type, send_json
from ..processes import ProcessGroup, ServerProcess
from .support import sign_in

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def instance(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ServerProcess, str]]:
    """An instance on each database, and alice's token."""
    directory: Path = tmp_path_factory.mktemp(f"edges-{request.param}")
    if request.param == "sqlite":
        database_url = f"sqlite+aiosqlite:///{directory / 'edges.db'}"
    else:
        database_url = request.getfixturevalue("postgres_database_url")
    asyncio.run(create_tables(database_url))
    env = instance_env(database_url, "memory://", f"edges-{secrets.token_hex(4)}")
    with ProcessGroup(directory) as group:
        server = group.start_app(f"edges-{request.param}", env=env)
        with httpx.Client(base_url=server.base_url) as http:
            username = f"alice{secrets.token_hex(3)}"
            token = sign_in(http, username)
            room = http.post(
                "/rooms",
                json={"name": f"edges-{username}", "title": "Edges"},
                headers={"Authorization": f"Bearer {token}"},
            )
            assert room.status_code == 201, room.text
        yield server, token


async def test_nul_characters_are_refused_on_both_databases(instance: tuple[ServerProcess, str]) -> None:
    server, token = instance
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=server.base_url, headers=headers, timeout=30) as http:
        me = (await http.get("/users/me")).json()["username"]
        room = f"edges-{me}"
        answers = [
            await http.post("/auth/register", json={"username": "nul\x00user", "password": PASSWORD}),
            await http.post("/rooms", json={"name": "nul-room", "title": "a\x00b"}),
            await http.get("/rooms/lob%00by"),
            await http.post(f"/rooms/{room}/members", json={"username": "bo\x00b"}),
        ]
        assert [answer.status_code for answer in answers] == [422] * len(answers), [a.text for a in answers]
        login = await http.post("/auth/token", data={"username": "nul\x00user", "password": PASSWORD})
        assert login.status_code == 401
    async with connect_ws(server.ws_url + f"/ws/rooms/{room}", token) as websocket:
        await receive_type(websocket, "presence.state")
        await send_json(websocket, {"type": "chat.message", "text": "a\x00b"})
        assert (await receive_type(websocket, "error"))["code"] == "invalid_message"
        await send_json(websocket, {"type": "chat.message", "text": "still fine"})
        assert (await receive_type(websocket, "chat.message"))["text"] == "still fine"
    async with connect_ws(server.ws_url + "/ws/rooms/lob%00by", token) as websocket:
        assert await close_code(websocket) == 1008
    assert " ERROR " not in server.output()


def test_a_percent_encoded_token_parameter_is_redacted_under_plain_uvicorn(tmp_path: Path) -> None:
    database_url = f"sqlite+aiosqlite:///{tmp_path / 'plain.db'}"
    asyncio.run(create_tables(database_url))
    env = {**instance_env(database_url, "memory://", f"plain-{secrets.token_hex(4)}"), "LOG_LEVEL": "DEBUG"}
    with ProcessGroup(tmp_path) as group:
        app = "{{ cookiecutter.package_name }}.main:create_app"
        server = group.start_uvicorn("plain", app, factory=True, env=env)
        with httpx.Client(base_url=server.base_url) as http:
            token = sign_in(http, "plain")
            secret = "not-a-jwt-" + secrets.token_hex(8)
            http.get(f"/healthz?tok%65n={secret}&p%61ssword={secret}")
            http.get(f"/users/me?tok%65n={token}", headers={"Authorization": f"Bearer {token}"})

        async def open_socket() -> None:
            with contextlib.suppress(Exception):
                async with connect_ws(server.ws_url + f"/ws/notifications?tok%65n={token}") as websocket:
                    await close_code(websocket)

        asyncio.run(open_socket())
        group.stop_all()
        output = server.output()
    assert "/healthz?tok%65n=[REDACTED]" in output
    assert secret not in output
    assert token not in output
    assert token.split(".")[1] not in output
{%- if cookiecutter.use_gateway == "y" %}


@pytest.fixture(scope="module")
def gateway(
    instance: tuple[ServerProcess, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    with ProcessGroup(tmp_path_factory.mktemp("edges-gateway")) as group:
        yield group.start_gateway([instance[0]])


async def raw_get(server: ServerProcess, target: str) -> bytes:
    """What the server answers to `GET <target>` sent as is (HTTP clients resolve dot segments first)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        writer.write(f"GET {target} HTTP/1.1\r\nHost: public.example\r\nConnection: close\r\n\r\n".encode())
        await writer.drain()
        async with asyncio.timeout(10):
            return await reader.read()
    finally:
        writer.close()


@pytest.mark.parametrize("target", ["/./metrics", "/x/../metrics", "/%2e/metrics", "/x/%2E%2E/metrics"])
async def test_dot_segments_never_reach_an_instances_metrics(gateway: ServerProcess, target: str) -> None:
    answer = await raw_get(gateway, target)
    assert answer.startswith(b"HTTP/1.1 400"), answer[:200]
    assert b"realtime_connections" not in answer


async def test_a_redirect_through_the_gateway_points_at_the_gateway(gateway: ServerProcess) -> None:
    answer = await raw_get(gateway, "/rooms/")
    head = answer.split(b"\r\n\r\n")[0].decode("latin-1").lower()
    assert head.startswith("http/1.1 307"), head
    assert "\r\nlocation: http://public.example/rooms" in head
{%- endif %}
