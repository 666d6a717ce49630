"""Fixtures of the realtime tests: every behaviour runs on `memory://` and on the real Redis."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from {{ cookiecutter.package_name }}.realtime import WebSocketManager


@pytest.fixture(params=["memory", "redis"])
def broker_url(request: pytest.FixtureRequest) -> str:
    if request.param == "memory":
        return "memory://"
    url: str = request.getfixturevalue("redis_url")
    return url


@pytest.fixture
async def manager(broker_url: str, broker_channel: str) -> AsyncIterator[WebSocketManager]:
    async with WebSocketManager(broker_channel, broker_url, queue_size=64, close_timeout=2.0) as started:
        yield started
