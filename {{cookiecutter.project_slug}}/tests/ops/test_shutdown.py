"""Graceful shutdown of a real app process on SIGTERM, as in a rolling deployment.

uvicorn stops accepting at once, closes every WebSocket with 1012 (service restart) so that clients
reconnect to another instance, lets requests in flight finish for up to `SHUTDOWN_GRACE_SECONDS`, then runs
the lifespan shutdown (the manager and the broker) and exits.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from ..processes import ProcessGroup, ServerProcess, wait_until
from .support import (
    PASSWORD,
    close_code,
    connect_ws,
    create_room,
    create_tables,
    instance_env,
    log_in,
    receive_type,
    sample,
    scrape,
)

pytestmark = pytest.mark.slow

GRACE = 3


@pytest.fixture
async def instance(
    process_group: ProcessGroup, tmp_path: Path, redis_url: str, broker_channel: str
) -> ServerProcess:
    """An app instance on Redis, with a short grace period."""
    database_url = f"sqlite+aiosqlite:///{tmp_path / 'app.db'}"
    await create_tables(database_url)
    env = instance_env(database_url, redis_url, broker_channel, shutdown_grace_seconds=str(GRACE))
    return process_group.start_app("app1", env=env)


async def exit_shutting_down(instance: ServerProcess, within: float) -> None:
    """Wait for the process to exit after a complete shutdown, lifespan included.

    Once shut down, uvicorn raises the signal it caught again, so the process ends as SIGTERM's default
    action would: status -15, as orchestrators expect.
    """
    status = await asyncio.to_thread(instance.process.wait, within)
    assert status == -signal.SIGTERM
    output = instance.output()
    assert "Application shutdown complete" in output
    assert "Finished server process" in output


async def slow_body(first: bytes, rest: bytes, release: asyncio.Event) -> AsyncIterator[bytes]:
    """A request body sent in two parts, the second once `release` is set."""
    yield first
    await release.wait()
    yield rest


async def wait_in_flight(http: httpx.AsyncClient, count: int) -> None:
    """Until `count` requests are being answered, the scrape that asks included."""

    async def in_flight() -> bool:
        return sample(await scrape(http), "http_requests_in_progress") == count

    await wait_until(in_flight, within=5)


async def refuses_connections(instance: ServerProcess) -> bool:
    """Whether a new connection goes unserved: refused, or (taken from the backlog as the listening socket
    closed) closed or reset without an answer."""
    async with httpx.AsyncClient(base_url=instance.base_url, timeout=1) as newcomer:
        try:
            await newcomer.get("/healthz")
        except (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError):
            return True
    return False


async def test_websockets_are_closed_with_1012_and_the_process_exits_at_once(instance: ServerProcess) -> None:
    async with httpx.AsyncClient(base_url=instance.base_url) as http:
        token = await log_in(http, "alice")
        await create_room(http, token, "lobby")
    room = f"{instance.ws_url}/ws/rooms/lobby"
    async with connect_ws(room, token) as first, connect_ws(room, token, place="subprotocol") as second:
        await receive_type(second, "presence.state")
        started = time.monotonic()
        instance.process.send_signal(signal.SIGTERM)
        assert await close_code(first) == 1012
        assert await close_code(second) == 1012
    await exit_shutting_down(instance, within=GRACE)
    assert time.monotonic() - started < GRACE


async def test_a_request_in_flight_is_answered_and_new_connections_refused(instance: ServerProcess) -> None:
    release = asyncio.Event()
    body = slow_body(b'{"username": "slow-sender", ', b'"password": "' + PASSWORD.encode() + b'"}', release)
    async with httpx.AsyncClient(base_url=instance.base_url, timeout=10) as http:
        registration = asyncio.create_task(
            http.post("/auth/register", content=body, headers={"Content-Type": "application/json"})
        )
        await wait_in_flight(http, 2)
        started = time.monotonic()
        instance.process.send_signal(signal.SIGTERM)
        await wait_until(lambda: refuses_connections(instance), within=5)
        assert instance.running
        release.set()
        response = await registration
    assert response.status_code == 201, response.text
    assert response.json()["username"] == "slow-sender"
    await exit_shutting_down(instance, within=GRACE)
    assert time.monotonic() - started < GRACE


async def test_a_request_that_never_ends_is_cut_off_at_the_grace_period(instance: ServerProcess) -> None:
    never = asyncio.Event()
    async with httpx.AsyncClient(base_url=instance.base_url, timeout=GRACE + 5) as http:
        stalled = asyncio.create_task(
            http.post(
                "/auth/register",
                content=slow_body(b'{"username": ', b"", never),
                headers={"Content-Type": "application/json"},
            )
        )
        await wait_in_flight(http, 2)
        started = time.monotonic()
        instance.process.send_signal(signal.SIGTERM)
        await exit_shutting_down(instance, within=GRACE + 5)
        elapsed = time.monotonic() - started
        stalled.cancel()
        await asyncio.gather(stalled, return_exceptions=True)
    assert GRACE - 0.5 < elapsed < GRACE + 1.5
