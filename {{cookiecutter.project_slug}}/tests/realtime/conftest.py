"""Fixtures of the realtime tests: every behaviour runs on `memory://` and on the real Redis."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from {{ cookiecutter.package_name }}.realtime import WebSocketManager

from .cluster import LocalCluster, local_cluster


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


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """A Redis Cluster shared by the tests that neither kill nor move anything in it."""
    with local_cluster(tmp_path_factory.mktemp("redis-cluster")) as cluster:
        yield cluster
