"""Shared fixtures: real Redis and PostgreSQL when reachable.

Tests that need a service skip when it is unreachable, unless `REQUIRE_SERVICES=1` (CI), where they fail.
Each test run gets its own PostgreSQL database (dropped afterwards) and its own broker channel prefix, so
several runs can share one server.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import pytest
import redis

from .processes import ProcessGroup

REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
POSTGRES_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REQUIRE_SERVICES = os.environ.get("REQUIRE_SERVICES") == "1"


def unavailable(service: str, error: BaseException) -> None:
    message = f"{service} is not reachable: {error}"
    if REQUIRE_SERVICES:
        pytest.fail(f"{message} (REQUIRE_SERVICES=1)")
    pytest.skip(message)


@pytest.fixture(scope="session")
def run_id() -> str:
    return secrets.token_hex(4)


@pytest.fixture(scope="session")
def redis_url() -> str:
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as error:
        unavailable("Redis", error)
    finally:
        client.close()
    return REDIS_URL


@pytest.fixture
def broker_channel(run_id: str) -> str:
    """A channel prefix unique to this test, so concurrent runs on one Redis never hear each other."""
    return f"test-{run_id}-{secrets.token_hex(3)}"


async def _execute(url: str, statement: str) -> None:
    """Run `statement` on a PostgreSQL connection of its own, outside any transaction (as CREATE DATABASE
    must be)."""
    connection = await asyncpg.connect(url, timeout=5)
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


@pytest.fixture(scope="session")
def postgres_database_url(run_id: str) -> Iterator[str]:
    """`postgresql+asyncpg://` URL of a database created for this test run."""
    name = f"test_{{ cookiecutter.package_name }}_{run_id}"
    try:
        asyncio.run(_execute(POSTGRES_URL, f'CREATE DATABASE "{name}"'))
    except (OSError, asyncpg.PostgresError) as error:
        unavailable("PostgreSQL", error)
    parts = urlsplit(POSTGRES_URL)
    yield f"postgresql+asyncpg://{parts.netloc}/{name}"
    asyncio.run(_execute(POSTGRES_URL, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
def process_group(tmp_path: Path) -> Iterator[ProcessGroup]:
    """Server processes for one test, all stopped afterwards (see `processes.py`)."""
    with ProcessGroup(tmp_path) as group:
        yield group


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database on each backend: a new SQLite file, or the run's PostgreSQL database emptied."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'test.db'}"
    url: str = request.getfixturevalue("postgres_database_url")
    asyncpg_url = url.replace("postgresql+asyncpg://", "postgresql://", 1)
    asyncio.run(_execute(asyncpg_url, "DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
    return url
