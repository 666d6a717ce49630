"""Bytes are bounded where they arrive, on real processes{% if cookiecutter.use_gateway == "y" %} (an app instance and the gateway in front of it){% endif %}.

A body over `HTTP_MAX_BODY_BYTES` is answered 413 before it is read, and a 422 does not echo a large input;
a request head over `HTTP_MAX_HEADER_BYTES`, or with more than `HTTP_MAX_HEADERS` headers, 431; a connection
whose head has not arrived within `HTTP_HEADER_TIMEOUT_SECONDS` is closed (slowloris); a WebSocket frame over
`WS_MAX_MESSAGE_BYTES` is closed with 1009 by the server before it is buffered, compressed or not.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from ..app.ws_support import close_code, receive_type, send_json
from ..processes import ProcessGroup, ServerProcess
from .support import Instance, resident_bytes, start_sqlite_instance

pytestmark = pytest.mark.slow

MAX_BODY_BYTES = 1024 * 1024  # the defaults
MAX_HEADER_BYTES = 32 * 1024
MAX_HEADERS = 100
MAX_MESSAGE_BYTES = 64 * 1024
HEADER_TIMEOUT = 1.0  # set for these tests; 10 s by default
SLOW_CLIENTS = 20


@pytest.fixture(scope="module")
def group(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ProcessGroup, Instance]]:
    directory = tmp_path_factory.mktemp("http-limits")
    with ProcessGroup(directory) as group:
        instance = start_sqlite_instance(
            group, directory, "bounded", users=["alice"], http_header_timeout_seconds=str(HEADER_TIMEOUT)
        )
        yield group, instance


@pytest.fixture(scope="module")
def instance(group: tuple[ProcessGroup, Instance]) -> Instance:
    return group[1]
{%- if cookiecutter.use_gateway == "y" %}


@pytest.fixture(scope="module")
def gateway(group: tuple[ProcessGroup, Instance]) -> ServerProcess:
    processes, instance = group
    env = {**instance.env, "HTTP_HEADER_TIMEOUT_SECONDS": str(HEADER_TIMEOUT)}
    return processes.start_gateway([instance.server], env=env)


@pytest.fixture(params=["app", "gateway"])
def server(request: pytest.FixtureRequest, instance: Instance) -> ServerProcess:
    if request.param == "gateway":
        gateway_process: ServerProcess = request.getfixturevalue("gateway")
        return gateway_process
    return instance.server
{%- else %}


@pytest.fixture
def server(instance: Instance) -> ServerProcess:
    return instance.server
{%- endif %}


async def raw_request(server: ServerProcess, head: bytes) -> bytes:
    """Send a raw request head and return what the server answers before it closes (or 5 s pass)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        with contextlib.suppress(ConnectionError):
            writer.write(head)
            await writer.drain()
        async with asyncio.timeout(5):
            return await reader.read(65536)
    finally:
        writer.close()


async def test_a_body_over_the_limit_is_413_without_being_read(server: ServerProcess) -> None:
    before = resident_bytes(server.process.pid)
    declared = b"POST /auth/register HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    answer = await raw_request(server, declared + b"Content-Length: %d\r\n\r\n{" % (100 * MAX_BODY_BYTES))
    assert answer.startswith(b"HTTP/1.1 413")

    chunk = b" " * (MAX_BODY_BYTES // 4)
    chunked = declared + b"Transfer-Encoding: chunked\r\n\r\n" + b"%x\r\n%s\r\n" % (len(chunk), chunk) * 5
    assert (await raw_request(server, chunked)).startswith(b"HTTP/1.1 413")
    assert resident_bytes(server.process.pid) - before < 10 * MAX_BODY_BYTES


async def test_a_422_does_not_echo_a_large_input(server: ServerProcess) -> None:
    async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as http:
        response = await http.post("/auth/register", json={"username": "x" * 500_000, "password": "p" * 20})
    assert response.status_code == 422
    assert len(response.content) < 2000
    assert "xxxxxxxxxx" not in response.text


async def test_headers_too_large_or_too_many_are_431(server: ServerProcess) -> None:
    huge = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (2 * MAX_HEADER_BYTES) + b"\r\n\r\n"
    assert (await raw_request(server, huge)).startswith(b"HTTP/1.1 431")
    many = b"".join(b"X-%d: y\r\n" % number for number in range(MAX_HEADERS + 1))
    answer = await raw_request(server, b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + many + b"\r\n")
    assert answer.startswith(b"HTTP/1.1 431")


async def test_a_slow_request_head_is_closed_after_the_header_timeout(server: ServerProcess) -> None:
    async def slow_client() -> float:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        started = time.monotonic()
        try:
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            async with asyncio.timeout(HEADER_TIMEOUT + 20):
                while True:
                    writer.write(b"X-Slow: 1\r\n")
                    await writer.drain()
                    if await asyncio.wait_for(reader.read(1), 0.3) == b"":
                        return time.monotonic() - started
        except (ConnectionError, TimeoutError) as error:
            if isinstance(error, TimeoutError) and time.monotonic() - started > HEADER_TIMEOUT + 19:
                raise
            return time.monotonic() - started
        finally:
            writer.close()

    lifetimes = await asyncio.gather(*(asyncio.create_task(slow_client()) for _ in range(SLOW_CLIENTS)))
    assert max(lifetimes) < HEADER_TIMEOUT + 15
    async with httpx.AsyncClient(base_url=server.base_url) as http:  # and the server still serves
        assert (await http.get("/healthz")).status_code == 200


async def test_a_frame_over_the_limit_is_closed_1009_before_it_is_buffered(
    server: ServerProcess, instance: Instance
) -> None:
    """16 MB of zeros compress to about 16 KB: the server stops inflating at `WS_MAX_MESSAGE_BYTES`."""
    url = server.ws_url + "/ws/rooms/lobby"
    async with httpx.AsyncClient(base_url=instance.base_url) as http:
        await http.post("/rooms", json={"name": "lobby", "title": "Lobby"}, headers=instance.headers("alice"))
    before = resident_bytes(server.process.pid)
    for _ in range(5):
        async with connect(
            url, additional_headers=instance.headers("alice"), max_size=None, compression="deflate"
        ) as websocket:
            await receive_type(websocket, "presence.state")
            with contextlib.suppress(ConnectionClosed):
                await send_json(websocket, {"type": "chat.message", "text": "a" * (16 * 1024 * 1024)})
            assert await close_code(websocket, within=20) == 1009
    assert resident_bytes(server.process.pid) - before < 50 * 1024 * 1024
