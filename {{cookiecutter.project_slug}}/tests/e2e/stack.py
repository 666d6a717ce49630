"""The deployed stack as real processes on loopback ports, and what the tests that drive it share: the
lobby's connections through the gateway, and the room's stored history."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AsyncExitStack
from dataclasses import dataclass

import httpx

from ..processes import PROJECT_DIR, ProcessGroup, ServerProcess
from ..realtime.support import eventually
from .clients import RoomClient, TokenPlace

ROOM = "lobby"
APP_NAMES = ("app1", "app2")
TIME_LIMIT_SECONDS = 55.0  # each test, start-up included
PRESENCE_TTL_SECONDS = 3.0
GATEWAY_HEALTH_INTERVAL_SECONDS = 0.2
SLACK_SECONDS = 5.0  # added to every expected delay: the machine may be busy with other work
WAIT_SECONDS = 10.0  # the bound of anything that takes well under a second on an idle machine
LANDING_ATTEMPTS = 6
HISTORY_PAGE = 100


@dataclass
class Topology:
    """The running stack, and when its start began (the test's time limit counts from there)."""

    gateway: ServerProcess
    apps: dict[str, ServerProcess]
    started_at: float
    migrated_in: float
    ready_in: float


def seconds_left(started_at: float) -> float:
    """What remains of the test's time limit, counted from `started_at` (monotonic)."""
    return started_at + TIME_LIMIT_SECONDS - time.monotonic()


def migrate(database_url: str, timeout: float) -> float:
    """`alembic upgrade head` on `database_url`, as the stack's one-shot `migrate` service runs it.

    Returns the seconds it took.
    """
    started_at = time.monotonic()
    migration = subprocess.run(
        [sys.executable, "-m", "alembic", "upgrade", "head"],
        cwd=PROJECT_DIR,
        env={**os.environ, "DATABASE_URL": database_url},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert migration.returncode == 0, migration.stdout + migration.stderr
    return time.monotonic() - started_at


@dataclass
class Lobby:
    """Connections to the lobby through the gateway, each closed when `connections` closes."""

    url: str
    tokens: dict[str, str]
    connections: AsyncExitStack

    async def join(
        self,
        user: str,
        place: TokenPlace,
        *,
        landing: Callable[[str | None], bool] = lambda _instance: True,
        since: int | None = None,
    ) -> RoomClient:
        """`user`'s connection, once it has arrived (had its `presence.state`), opened again until it
        lands on an instance that `landing` accepts."""
        for _attempt in range(LANDING_ATTEMPTS):
            client = await RoomClient.open(self.url, user, self.tokens[user], place=place, since=since)
            if landing(client.instance):
                break
            await client.close()
        else:
            raise AssertionError(f"{user} did not land where wanted in {LANDING_ATTEMPTS} connections")
        self.connections.push_async_callback(client.close)
        await eventually(lambda: client.present is not None, WAIT_SECONDS)
        return client


async def say_in_turn(client: RoomClient, texts: list[str]) -> None:
    for text in texts:
        await client.say(text)


async def seconds_after(since: float, waiting: Awaitable[None]) -> float:
    """Seconds from `since` (monotonic) until `waiting` is over."""
    await waiting
    return time.monotonic() - since


async def stored_ids(http: httpx.AsyncClient, token: str) -> list[int]:
    """The seqs of every message stored in the lobby, page by page."""
    ids: list[int] = []
    while True:
        response = await http.get(
            f"/rooms/{ROOM}/messages",
            params={"after": ids[-1] if ids else 0, "limit": HISTORY_PAGE},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert response.status_code == 200, response.text
        page = [message["seq"] for message in response.json()]
        ids += page
        if len(page) < HISTORY_PAGE:
            return ids


def start_topology(
    database_url: str, redis_url: str, broker_channel: str, process_group: ProcessGroup
) -> Topology:
    """The stack as deployed: the migrations applied by Alembic, two app instances and the gateway."""
    started_at = time.monotonic()
    env = {
        "ENVIRONMENT": "test",
        "SECRET_KEY": secrets.token_urlsafe(36),  # 48 characters, the same on every instance
        "DATABASE_URL": database_url,
        "BROKER_URL": redis_url,
        "BROKER_CHANNEL": broker_channel,
        "ARGON2_TIME_COST": "1",
        "ARGON2_MEMORY_COST": "1024",
        "AUTH_ATTEMPTS_PER_ADDRESS": "1000000",  # every client logs in from the same address
        "AUTH_ATTEMPTS_PER_USERNAME": "1000000",
        "WS_PRESENCE_TTL_SECONDS": str(PRESENCE_TTL_SECONDS),
    }
    # Start-up is the slowest part on a busy machine: each process spends seconds importing. The instances
    # touch no table before their first request, so they start while the migrations run.
    with ThreadPoolExecutor(1 + len(APP_NAMES)) as pool:
        migrating = pool.submit(migrate, database_url, seconds_left(started_at))
        starting = [
            pool.submit(process_group.start_app, name, env=env, timeout=seconds_left(started_at))
            for name in APP_NAMES
        ]
        migrated_in = migrating.result()
        apps = [future.result() for future in starting]
    gateway_env = {"GATEWAY_HEALTH_INTERVAL_SECONDS": str(GATEWAY_HEALTH_INTERVAL_SECONDS)}
    gateway = process_group.start_gateway(apps, env=gateway_env, timeout=seconds_left(started_at))
    ready_in = time.monotonic() - started_at
    return Topology(gateway, {app.name: app for app in apps}, started_at, migrated_in, ready_in)
