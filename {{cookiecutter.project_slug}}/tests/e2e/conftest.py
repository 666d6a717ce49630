"""The deployed stack, started for each end-to-end test."""

from __future__ import annotations

import pytest

from ..processes import ProcessGroup
from .stack import Topology, start_topology


@pytest.fixture
def topology(database_url: str, redis_url: str, broker_channel: str, process_group: ProcessGroup) -> Topology:
    """The stack as deployed: the migrations applied by Alembic, two app instances and the gateway."""
    return start_topology(database_url, redis_url, broker_channel, process_group)
