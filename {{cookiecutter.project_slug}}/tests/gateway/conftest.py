"""Fixtures of the gateway tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ..processes import ProcessGroup, ServerProcess
from .gateway_support import start_upstream


@pytest.fixture(scope="module")
def upstream_pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    """Two upstream processes, `alpha` and `beta`, shared by the tests of a module that do not stop them."""
    with ProcessGroup(tmp_path_factory.mktemp("upstreams")) as group:
        yield start_upstream(group, "alpha"), start_upstream(group, "beta")
