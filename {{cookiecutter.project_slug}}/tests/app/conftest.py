"""The app on an empty database of each backend, an HTTP client for it, and registered users."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from fastapi import FastAPI
from httpx import ASGITransport, AsyncClient
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from {{ cookiecutter.package_name }}.settings import Settings

from ..processes import serve_in_loop
from .support import PASSWORD, AuthHeaders, running_app, settings_for_tests
from .ws_support import Lobby, create_room, token_for


@pytest.fixture
def broker_url(request: pytest.FixtureRequest) -> str:
    """`memory://`, or the test Redis for tests parametrized with `broker_url` = "redis" (indirect)."""
    if getattr(request, "param", "memory") == "redis":
        url: str = request.getfixturevalue("redis_url")
        return url
    return "memory://"


@pytest.fixture
def settings(database_url: str, broker_url: str, broker_channel: str) -> Settings:
    return settings_for_tests(database_url, broker_channel, broker_url)


@pytest.fixture
async def app(settings: Settings) -> AsyncIterator[FastAPI]:
    """The app with its lifespan running, on a database that has the tables."""
    async with running_app(settings) as app:
        yield app


@pytest.fixture
async def ws_url(app: FastAPI) -> AsyncIterator[str]:
    """`ws://127.0.0.1:<port>`: the same app behind a real uvicorn server in the test's event loop."""
    async with serve_in_loop(app, lifespan="off") as base_url:
        yield base_url.replace("http://", "ws://", 1)


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[AsyncClient]:
    async with AsyncClient(transport=ASGITransport(app=app), base_url="http://test") as client:
        yield client


@pytest.fixture
def session_factory(app: FastAPI) -> async_sessionmaker[AsyncSession]:
    """The app's own sessions, to arrange or inspect rows directly; keep each one short."""
    factory: async_sessionmaker[AsyncSession] = app.state.session_factory
    return factory


@pytest.fixture
def auth_headers(client: AsyncClient) -> AuthHeaders:
    """Register a user with `PASSWORD`, log in, and return the `Authorization` header for their token."""

    async def register_and_log_in(username: str) -> dict[str, str]:
        registered = await client.post("/auth/register", json={"username": username, "password": PASSWORD})
        assert registered.status_code == 201, registered.text
        token = await client.post("/auth/token", data={"username": username, "password": PASSWORD})
        assert token.status_code == 200, token.text
        return {"Authorization": f"Bearer {token.json()['access_token']}"}

    return register_and_log_in


@pytest.fixture
async def lobby(client: AsyncClient, auth_headers: AuthHeaders, ws_url: str) -> Lobby:
    """Alice and Bob registered, and the public room "lobby" that Alice created."""
    alice, bob = await token_for(auth_headers, "alice"), await token_for(auth_headers, "bob")
    await create_room(client, alice, "lobby")
    return Lobby(alice, bob, f"{ws_url}/ws/rooms/lobby")
