"""The app on a SQLite file and the memory broker, served by a real uvicorn server in the test's loop."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from fastapi import FastAPI
from httpx import AsyncClient

from {{ cookiecutter.package_name }}.settings import Settings

from ..app.support import running_app, settings_for_tests
from ..processes import serve_in_loop


@pytest.fixture
def settings(tmp_path: Path, broker_channel: str) -> Settings:
    return settings_for_tests(f"sqlite+aiosqlite:///{tmp_path / 'ops.db'}", broker_channel)


@pytest.fixture
async def app(settings: Settings) -> AsyncIterator[FastAPI]:
    async with running_app(settings) as app:
        yield app


@pytest.fixture
async def base_url(app: FastAPI) -> AsyncIterator[str]:
    """`http://127.0.0.1:<port>`, serving `app` over real sockets, WebSockets included."""
    async with serve_in_loop(app, lifespan="off") as url:
        yield url


@pytest.fixture
async def http(base_url: str) -> AsyncIterator[AsyncClient]:
    async with AsyncClient(base_url=base_url, timeout=10) as client:
        yield client
