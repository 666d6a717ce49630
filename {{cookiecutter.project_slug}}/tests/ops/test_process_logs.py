"""The log of a real production process: JSON lines, request ids, and never a token, even at DEBUG."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from ..processes import ProcessGroup
from .support import (
    PASSWORD,
    close_code,
    connect_ws,
    create_room,
    create_tables,
    instance_env,
    log_in,
    receive_type,
    send_json,
)

pytestmark = pytest.mark.slow


def json_lines(output: str) -> list[dict[str, Any]]:
    """Every line of `output` as a JSON object; fails on the first line that is not one."""
    records = []
    for line in output.splitlines():
        record = json.loads(line)
        assert isinstance(record, dict), line
        records.append(record)
    return records


async def test_a_token_in_a_header_a_query_or_a_subprotocol_never_reaches_the_log(
    process_group: ProcessGroup, tmp_path: Path, broker_channel: str
) -> None:
    database_url = f"sqlite+aiosqlite:///{tmp_path / 'app.db'}"
    await create_tables(database_url)
    env = instance_env(database_url, "memory://", broker_channel, environment="production", log_level="DEBUG")
    instance = process_group.start_app("app1", env=env)
    room = f"{instance.ws_url}/ws/rooms/lobby"
    async with httpx.AsyncClient(base_url=instance.base_url, timeout=10) as http:
        token = await log_in(http, "alice")
        await create_room(http, token, "lobby")
        headers = {"Authorization": f"Bearer {token}", "X-Request-ID": "ops-me"}
        me = await http.get("/users/me", headers=headers)
        assert me.status_code == 200
        assert me.headers["X-Request-ID"] == "ops-me"
        # HTTP routes take the header only; the token in the query still reaches the access log.
        assert (await http.get("/users/me", params={"token": token})).status_code == 401
        for place in ("header", "query", "subprotocol"):
            async with connect_ws(room, token, place=place) as websocket:
                await send_json(websocket, {"type": "chat.message", "text": f"token in the {place}"})
                await receive_type(websocket, "chat.message")
        async with connect_ws(room, token[:-4] + "AAAA", place="query") as forged:
            assert await close_code(forged) == 1008
    instance.stop()

    output = instance.output()
    signature = token.rsplit(".", 1)[1]
    assert token not in output
    assert signature not in output
    assert PASSWORD not in output
    records = json_lines(output)
    assert {"time", "level", "logger", "message", "request_id", "instance"} <= records[0].keys()
    assert {record["instance"] for record in records} == {"app1"}
    [access] = [record for record in records if record["request_id"] == "ops-me"]
    assert '"GET /users/me HTTP/1.1" 200' in access["message"]
    websocket_lines = [record for record in records if "WebSocket /ws/rooms/lobby" in record["message"]]
    assert len(websocket_lines) == 4
    assert all(record["request_id"] for record in websocket_lines)
    assert sum("token=[REDACTED]" in record["message"] for record in websocket_lines) == 2
