"""`WS_COMPRESSION`: the `serve` command declines permessage-deflate unless it is `deflate`."""

from __future__ import annotations

from pathlib import Path

import pytest
from websockets.asyncio.client import connect

from ..processes import ProcessGroup
from .support import create_tables, instance_env

pytestmark = pytest.mark.slow


@pytest.mark.parametrize(("setting", "negotiated"), [(None, False), ("off", False), ("deflate", True)])
async def test_permessage_deflate_is_negotiated_only_when_the_setting_says_so(
    process_group: ProcessGroup,
    tmp_path: Path,
    redis_url: str,
    broker_channel: str,
    setting: str | None,
    negotiated: bool,
) -> None:
    database_url = f"sqlite+aiosqlite:///{tmp_path / 'app.db'}"
    await create_tables(database_url)
    env = instance_env(database_url, redis_url, broker_channel)
    if setting is not None:
        env["WS_COMPRESSION"] = setting
    instance = process_group.start_app("app1", env=env)
    # A browser offers permessage-deflate; the handshake succeeds either way (then 1008: no token).
    async with connect(f"{instance.ws_url}/ws/rooms/lobby", compression="deflate") as client:
        assert client.response is not None
        extensions = client.response.headers.get("Sec-WebSocket-Extensions", "")
    assert ("permessage-deflate" in extensions) is negotiated
