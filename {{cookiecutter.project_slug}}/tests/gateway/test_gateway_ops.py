"""Operating the stack through the gateway: metrics, request ids, logs, and a rolling restart."""

from __future__ import annotations

import json
import secrets
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import connect

from ..app.support import create_tables
from ..app.ws_support import (
    close_code,
    connect_ws,
    create_room,
    instance_env,
    log_in,
    receive_type,
    send_json,
    start_instances,
)
from ..ops.support import sample, scrape
from ..processes import ProcessGroup, ServerProcess, wait_until

pytestmark = pytest.mark.slow

WEBSOCKET_REQUEST_ID = "ws-through-the-gateway"


def production_gateway(group: ProcessGroup, upstreams: list[ServerProcess]) -> ServerProcess:
    env = {"ENVIRONMENT": "production", "SECRET_KEY": secrets.token_urlsafe(32), "LOG_LEVEL": "DEBUG"}
    return group.start_gateway(upstreams, env=env)


def logged(server: ServerProcess, request_id: str, text: str) -> bool:
    """Whether a JSON line of `server`'s log with `request_id` contains `text`."""
    lines = (json.loads(line) for line in server.output().splitlines())
    return any(text in line["message"] for line in lines if line["request_id"] == request_id)


async def test_the_gateway_measures_its_traffic_and_upstreams_and_passes_request_ids_on(
    process_group: ProcessGroup, tmp_path: Path, broker_channel: str
) -> None:
    database_url = f"sqlite+aiosqlite:///{tmp_path / 'app.db'}"
    await create_tables(database_url)
    env = instance_env(database_url, "memory://", broker_channel, environment="production", log_level="DEBUG")
    app = process_group.start_app("app1", env=env)
    gateway = production_gateway(process_group, [app])
    upstream = f"127.0.0.1:{app.port}"
    async with httpx.AsyncClient(base_url=gateway.base_url, timeout=10) as http:
        token = await log_in(http, "alice")
        await create_room(http, token, "lobby")
        health = await http.get("/healthz")
        request_id = health.headers["X-Request-ID"]
        for place in ("header", "query", "subprotocol"):
            async with connect_ws(f"{gateway.ws_url}/ws/rooms/lobby", token, place=place) as websocket:
                await send_json(websocket, {"type": "chat.message", "text": f"through the gateway, {place}"})
                await receive_type(websocket, "chat.message")
        traced = {"Authorization": f"Bearer {token}", "X-Request-ID": WEBSOCKET_REQUEST_ID}
        async with connect(f"{gateway.ws_url}/ws/rooms/lobby", additional_headers=traced) as websocket:
            await receive_type(websocket, "presence.state")
            assert websocket.response is not None
            assert websocket.response.headers["X-Request-ID"] == WEBSOCKET_REQUEST_ID

        async def gauge_is_zero(name: str, **labels: str) -> bool:
            return sample(await scrape(http, "/metrics"), name, **labels) == 0

        # The gateway counts a connection open until both of its sides are closed.
        await wait_until(lambda: gauge_is_zero("gateway_websocket_connections", route="/{path}"), within=5)
        exposition = await scrape(http, "/metrics")
        app.stop()
        await wait_until(lambda: gauge_is_zero("gateway_upstream_up", upstream=upstream), within=5)
    gateway.stop()

    assert sample(exposition, "gateway_upstream_up", upstream=upstream) == 1
    proxied = {"method": "GET", "route": "/{path}", "status": "200"}
    assert sample(exposition, "gateway_http_request_duration_seconds_count", **proxied) >= 1
    assert sample(exposition, "gateway_websocket_connections_accepted_total", route="/{path}") == 4
    assert sample(exposition, "gateway_websocket_sent_bytes_total", route="/{path}") > 0
    assert sample(exposition, "gateway_websocket_received_bytes_total", route="/{path}") > 0
    assert "alice" not in exposition
    assert "lobby" not in exposition
    # The gateway's own, not an instance's: those stay on the internal network.
    assert "realtime_connections" not in exposition

    # The app served the health check under the id the gateway gave it, and the WebSocket under the client's.
    assert logged(app, request_id, "GET /healthz")
    assert logged(gateway, request_id, "GET /healthz")
    assert logged(app, WEBSOCKET_REQUEST_ID, '"WebSocket /ws/rooms/lobby" [accepted]')
    for output in (app.output(), gateway.output()):
        assert token not in output
        assert token.rsplit(".", 1)[1] not in output


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_a_rolling_restart_loses_no_message(
    database_url: str, redis_url: str, broker_channel: str, process_group: ProcessGroup
) -> None:
    """An instance stopped for a new version: its clients get 1012, reconnect, and replay what they missed."""
    await create_tables(database_url)
    instances = start_instances(process_group, instance_env(database_url, redis_url, broker_channel))
    gateway = process_group.start_gateway(instances)
    room = f"{gateway.ws_url}/ws/rooms/lobby"
    async with httpx.AsyncClient(base_url=gateway.base_url, timeout=10) as http:
        alice, bob = await log_in(http, "alice"), await log_in(http, "bob")
        await create_room(http, alice, "lobby")
    async with connect_ws(room, alice) as alice_ws:
        assert alice_ws.response is not None
        landed = alice_ws.response.headers["X-Instance"]
        await send_json(alice_ws, {"type": "chat.message", "text": "before the restart"})
        last_seen = (await receive_type(alice_ws, "chat.message"))["seq"]
        [stopped] = [instance for instance in instances if instance.name == landed]
        stopped.process.terminate()
        assert await close_code(alice_ws) == 1012

    async with connect_ws(room, bob) as bob_ws:
        assert bob_ws.response is not None
        assert bob_ws.response.headers["X-Instance"] != landed
        await send_json(bob_ws, {"type": "chat.message", "text": "while alice reconnects"})
        missed = await receive_type(bob_ws, "chat.message")
    async with connect_ws(room, alice, since=last_seen) as alice_again:
        assert await receive_type(alice_again, "chat.message") == missed
