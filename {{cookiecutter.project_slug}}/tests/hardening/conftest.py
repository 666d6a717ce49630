"""Fixtures of the hardening tests that make faults of their own."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from .faults import PrivateRedis, running_redis


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[PrivateRedis]:
    """A Redis server of this test's own, to stop and start again; see `running_redis`."""
    with running_redis(tmp_path) as server:
        yield server
