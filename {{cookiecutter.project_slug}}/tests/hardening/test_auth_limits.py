"""Logins and registrations are limited, on real processes: per client address and per username, counted in
Redis by every instance together, answered 429 with `Retry-After`; password hashes run a few at a time, so a
burst of logins at the production Argon2 cost holds a bounded amount of memory and `/healthz` stays quick; a
password too long for its scheme is a 401, not a 500.
"""

from __future__ import annotations

import asyncio
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from passlib.hash import bcrypt

from ..app.support import PASSWORD, create_tables
from ..app.ws_support import instance_env
from ..processes import ProcessGroup, ServerProcess
from .support import resident_bytes

pytestmark = pytest.mark.slow

ATTEMPTS_PER_ADDRESS = 6
ATTEMPTS_PER_USERNAME = 3
CONCURRENT_LOGINS = 40
HASH_CONCURRENCY = 2  # the default of PASSWORD_HASH_CONCURRENCY
ARGON2_MEMORY = 64 * 1024 * 1024  # the default of ARGON2_MEMORY_COST


def database(directory: Path) -> str:
    url = f"sqlite+aiosqlite:///{directory / 'auth.db'}"
    asyncio.run(create_tables(url))
    return url


@pytest.fixture(scope="module")
def two_instances(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[list[ServerProcess]]:
    """Two instances on one database and one Redis, with low limits on attempts."""
    directory = tmp_path_factory.mktemp("auth-limits")
    env = instance_env(
        database(directory),
        redis_url,
        f"auth-limits-{secrets.token_hex(4)}",
        auth_attempts_per_address=str(ATTEMPTS_PER_ADDRESS),
        auth_attempts_per_username=str(ATTEMPTS_PER_USERNAME),
        auth_rate_window_seconds="3600",
    )
    with ProcessGroup(directory) as group:
        yield [group.start_app(name, env=env) for name in ("auth1", "auth2")]


def test_attempts_from_one_address_are_counted_on_every_instance_then_429(
    two_instances: list[ServerProcess],
) -> None:
    statuses = []
    for attempt in range(ATTEMPTS_PER_ADDRESS + 1):
        server = two_instances[attempt % 2]
        # Distinct usernames, so that only the address's limit can be reached.
        response = httpx.post(
            server.base_url + "/auth/token",
            data={"username": f"nobody{attempt}", "password": "wrong-password"},
        )
        statuses.append(response.status_code)
    assert statuses == [401] * ATTEMPTS_PER_ADDRESS + [429]
    assert 0 < int(response.headers["Retry-After"]) <= 3600
    registered = httpx.post(
        two_instances[0].base_url + "/auth/register", json={"username": "newcomer", "password": PASSWORD}
    )
    assert registered.status_code == 429


@pytest.fixture(scope="module")
def one_instance(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, str]]:
    """An instance at the production Argon2 cost, limited per username only, on the memory broker."""
    directory = tmp_path_factory.mktemp("auth-costs")
    database_url = database(directory)
    env = instance_env(
        database_url,
        "memory://",
        f"auth-costs-{secrets.token_hex(4)}",
        argon2_time_cost="3",
        argon2_memory_cost=str(ARGON2_MEMORY // 1024),
        auth_attempts_per_username=str(ATTEMPTS_PER_USERNAME),
        auth_rate_window_seconds="3600",  # fixed windows: a test's attempts never straddle two
    )
    with ProcessGroup(directory) as group:
        yield group.start_app("costly", env=env), database_url.removeprefix("sqlite+aiosqlite:///")


def test_attempts_for_one_username_are_limited_and_others_go_on(
    one_instance: tuple[ServerProcess, str],
) -> None:
    server, _ = one_instance
    with httpx.Client(base_url=server.base_url, timeout=30) as http:
        statuses = [
            http.post("/auth/token", data={"username": "target", "password": "guess-number-x"}).status_code
            for _ in range(ATTEMPTS_PER_USERNAME + 1)
        ]
        assert statuses == [401] * ATTEMPTS_PER_USERNAME + [429]
        assert http.post("/auth/token", data={"username": "other", "password": "guess"}).status_code == 401


@pytest.mark.heavy
def test_concurrent_logins_hash_a_few_at_a_time_and_healthz_stays_quick(
    one_instance: tuple[ServerProcess, str],
) -> None:
    server, _ = one_instance
    before = resident_bytes(server.process.pid)
    peak = before
    done = threading.Event()

    def watch_memory() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, resident_bytes(server.process.pid))
            time.sleep(0.02)

    async def burst() -> tuple[list[int], float]:
        async with httpx.AsyncClient(base_url=server.base_url, timeout=120) as http:
            logins = [
                asyncio.create_task(
                    http.post("/auth/token", data={"username": f"crowd{number}", "password": "x" * 12})
                )
                for number in range(CONCURRENT_LOGINS)
            ]
            await asyncio.sleep(0.5)  # let the hashes queue up
            started = time.monotonic()
            assert (await http.get("/healthz")).status_code == 200
            health_seconds = time.monotonic() - started
            return [response.status_code for response in await asyncio.gather(*logins)], health_seconds

    watcher = threading.Thread(target=watch_memory)
    watcher.start()
    try:
        statuses, health_seconds = asyncio.run(burst())
    finally:
        done.set()
        watcher.join()
    assert set(statuses) == {401}
    grew = peak - before
    print(f"\n{CONCURRENT_LOGINS} logins: memory +{grew / 2**20:.0f} MB, /healthz {health_seconds:.3f} s")
    assert grew < (HASH_CONCURRENCY + 2) * ARGON2_MEMORY
    assert health_seconds < 1.0


def test_passwords_too_long_for_their_scheme_are_401(one_instance: tuple[ServerProcess, str]) -> None:
    server, database_path = one_instance
    with sqlite3.connect(database_path) as connection:  # an account from before argon2: a bcrypt hash
        connection.execute(
            "INSERT INTO users (username, hashed_password, is_active, is_superuser, created_at, token_key) "
            "VALUES (?, ?, 1, 0, '2025-01-01 00:00:00', 'legacy-key')",
            ("legacy", bcrypt.hash(PASSWORD)),
        )
    with httpx.Client(base_url=server.base_url, timeout=30) as http:
        for username, password in [("legacy", "p" * 100), ("legacy2", "p" * 5000), ("legacy", "p" * 5000)]:
            response = http.post("/auth/token", data={"username": username, "password": password})
            assert response.status_code == 401, response.text
        assert http.post("/auth/token", data={"username": "legacy", "password": PASSWORD}).status_code == 200
