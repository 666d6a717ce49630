"""Fixtures of the realtime tests: every behaviour runs on `memory://` and on the real Redis."""

from __future__ import annotations

import pytest


@pytest.fixture(params=["memory", "redis"])
def broker_url(request: pytest.FixtureRequest) -> str:
    if request.param == "memory":
        return "memory://"
    url: str = request.getfixturevalue("redis_url")
    return url
