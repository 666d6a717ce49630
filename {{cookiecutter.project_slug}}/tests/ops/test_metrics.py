"""`/metrics` of the app: HTTP and WebSocket traffic, the realtime engine and the database pool.

Labels must stay few whatever clients do, so the traffic uses distinctive user and room names and the
exposition is searched for them afterwards.
"""

from __future__ import annotations

import asyncio

from fastapi import FastAPI
from httpx import ASGITransport, AsyncClient

from {{ cookiecutter.package_name }}.main import create_app
from {{ cookiecutter.package_name }}.settings import Settings

from ..processes import wait_until
from .support import (
    close_code,
    connect_ws,
    create_room,
    label_values,
    log_in,
    receive_type,
    sample,
    scrape,
    send_json,
)

USER = "quokka-metrics-user"
ROOM = "narwhal-metrics-room"
NAMES = (USER, ROOM)


async def test_http_requests_are_measured_by_route_template_never_by_path(http: AsyncClient) -> None:
    before = await scrape(http)
    token = await log_in(http, USER)
    await create_room(http, token, ROOM)
    auth = {"Authorization": f"Bearer {token}"}
    assert (await http.get(f"/rooms/{ROOM}", headers=auth)).status_code == 200
    assert (await http.get(f"/rooms/{ROOM}/messages", headers=auth)).status_code == 200
    assert (await http.get(f"/no-such-page/{USER}")).status_code == 404
    assert (await http.request("PROPFIND", f"/rooms/{ROOM}")).status_code == 405
    assert (await http.get("/static/styles.css")).status_code == 200
    count = "http_request_duration_seconds_count"
    # A response is measured once its body is sent, which can be just after the client has read it.
    for _ in range(50):
        after = await scrape(http)
        if sample(after, count, method="GET", route="/static/{path}", status="200"):
            break
        await asyncio.sleep(0.1)

    room_route = {"method": "GET", "route": "/rooms/{room}", "status": "200"}
    assert sample(after, count, **room_route) == sample(before, count, **room_route) + 1
    assert sample(after, count, method="POST", route="/auth/register", status="201") >= 1
    assert sample(after, count, method="GET", route="unmatched", status="404") >= 1
    assert sample(after, count, method="other", route="/rooms/{room}", status="405") == 1
    assert sample(after, count, method="GET", route="/static/{path}", status="200") == 1
    assert sample(after, "http_response_bytes_total", route="/rooms/{room}/messages") > 0
    assert sample(after, "http_request_bytes_total", route="/auth/register") > 0
    assert not any(name in after for name in NAMES)
    assert "PROPFIND" not in label_values(after)


async def test_websocket_traffic_and_the_engine_are_measured(http: AsyncClient, base_url: str) -> None:
    token = await log_in(http, USER)
    await create_room(http, token, ROOM)
    ws_url = base_url.replace("http://", "ws://", 1) + f"/ws/rooms/{ROOM}"
    route = "/ws/rooms/{room}"
    before = await scrape(http)
    async with connect_ws(ws_url, token) as first, connect_ws(ws_url, token, place="query") as second:
        await receive_type(second, "presence.state")
        for number in range(3):
            await send_json(first, {"type": "chat.message", "text": f"message {number} from {USER}"})
            await receive_type(second, "chat.message")
        during = await scrape(http)

    assert sample(during, "websocket_connections", route=route) == 2
    assert sample(during, "realtime_connections", consumer="RoomConsumer") == 2
    assert sample(during, "realtime_listening") == 1
    # Each chat message went to the room's group, to both connections of this instance.
    fanout = "realtime_fanout_recipients"
    groups = sample(during, f"{fanout}_count", kind="group") - sample(before, f"{fanout}_count", kind="group")
    assert groups >= 3
    assert sample(during, f"{fanout}_bucket", kind="group", le="+Inf") == sample(
        during, f"{fanout}_count", kind="group"
    )
    pairs = sample(during, f"{fanout}_bucket", kind="group", le="2.0") - sample(
        before, f"{fanout}_bucket", kind="group", le="2.0"
    )
    singles = sample(during, f"{fanout}_bucket", kind="group", le="1.0") - sample(
        before, f"{fanout}_bucket", kind="group", le="1.0"
    )
    assert pairs - singles >= 3
    delivered = "realtime_frames_delivered_total"
    assert sample(during, delivered) - sample(before, delivered) >= 2 * 3
    assert sample(during, "realtime_outbound_queue_high_water") >= 1
    assert sample(during, "realtime_frames_dropped_total") == sample(before, "realtime_frames_dropped_total")
    assert sample(during, "realtime_broker_reconnects_total") == 0
    accepted = "websocket_connections_accepted_total"
    assert sample(during, accepted, route=route) == sample(before, accepted, route=route) + 2
    assert sample(during, "websocket_messages_received_total", route=route) >= 3
    # Each message reaches both connections, behind the presence frames.
    assert sample(during, "websocket_messages_sent_total", route=route) >= 6
    assert sample(during, "websocket_sent_bytes_total", route=route) > 0
    assert sample(during, "realtime_broker_messages_total") > sample(before, "realtime_broker_messages_total")
    assert sample(during, "realtime_broker_state", state="connected") == 1
    assert sample(during, "realtime_ready") == 1
    assert not any(name in during for name in NAMES)

    async def both_gone() -> bool:
        exposition = await scrape(http)
        return sample(exposition, "websocket_connections", route=route) == 0

    await wait_until(both_gone, within=5)


async def test_a_refused_websocket_is_counted_by_its_close_code(http: AsyncClient, base_url: str) -> None:
    token = await log_in(http, USER)
    await create_room(http, token, ROOM)
    async with connect_ws(base_url.replace("http://", "ws://", 1) + f"/ws/rooms/{ROOM}") as anonymous:
        assert await close_code(anonymous) == 1008
    exposition = await scrape(http)
    assert sample(exposition, "websocket_closes_total", route="/ws/rooms/{room}", code="1008") == 1


async def test_the_database_pool_is_measured(http: AsyncClient) -> None:
    await log_in(http, USER)
    exposition = await scrape(http)
    assert sample(exposition, "db_pool_size") > 0
    assert sample(exposition, "db_pool_connections", state="idle") >= 1
    assert sample(exposition, "db_pool_connections", state="in_use") == 0


async def test_metrics_stay_out_of_the_openapi_schema(http: AsyncClient) -> None:
    schema = (await http.get("/openapi.json")).json()
    assert "/metrics" not in schema["paths"]
    assert "/healthz" in schema["paths"]


async def test_the_engine_and_pool_are_left_out_outside_the_lifespan(settings: Settings) -> None:
    app: FastAPI = create_app(settings)
    async with AsyncClient(transport=ASGITransport(app=app), base_url="http://test") as client:
        exposition = await scrape(client)
    assert "realtime_connections" not in exposition
    assert "db_pool_size" not in exposition
    assert "chat_messages_waiting" not in exposition
    assert "process_cpu_seconds_total" in exposition
