"""Shared by the app tests: the test password, the `auth_headers` fixture's type, settings, the tables, and
the app running."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from pydantic import SecretStr

from {{ cookiecutter.package_name }}.db.models import Base
from {{ cookiecutter.package_name }}.db.session import create_engine
from {{ cookiecutter.package_name }}.main import create_app
from {{ cookiecutter.package_name }}.settings import Settings

PASSWORD = "correct-horse-battery"

AuthHeaders = Callable[[str], Awaitable[dict[str, str]]]


def settings_for_tests(database_url: str, broker_channel: str, broker_url: str = "memory://") -> Settings:
    """No `.env`, a random secret, and cheap password hashing: the production cost would dominate the run."""
    return Settings(
        _env_file=None,
        environment="test",
        secret_key=SecretStr(secrets.token_urlsafe(32)),
        database_url=database_url,
        broker_url=broker_url,
        broker_channel=broker_channel,
        argon2_time_cost=1,
        argon2_memory_cost=1024,
        auth_attempts_per_address=1_000_000,  # every test client logs in from the same address
        auth_attempts_per_username=1_000_000,
    )


async def create_tables(database_url: str) -> None:
    """The app's tables straight from the models; the migrations are checked against them separately."""
    engine = create_engine(database_url)
    try:
        async with engine.begin() as connection:
            await connection.run_sync(Base.metadata.create_all)
    finally:
        await engine.dispose()


@asynccontextmanager
async def running_app(settings: Settings) -> AsyncIterator[FastAPI]:
    """The app with its lifespan running, on a database that has the tables."""
    await create_tables(settings.database_url)
    app = create_app(settings)
    async with LifespanManager(app):
        yield app
