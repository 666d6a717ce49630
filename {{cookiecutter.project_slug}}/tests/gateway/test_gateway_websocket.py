"""WebSockets through the gateway to real upstream processes, and the gateway run as its own process."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.typing import Subprotocol

from {{ cookiecutter.package_name }}.gateway.websocket_relay import RelayProtocol

from ..processes import ProcessGroup, ServerProcess
from ..realtime.support import close_received, hello, websocket_url
from .gateway_support import TIMEOUT, running_gateway, start_upstream

pytestmark = pytest.mark.slow


async def test_connections_take_turns_and_tell_where_they_landed(
    upstream_pair: tuple[ServerProcess, ServerProcess],
) -> None:
    async with running_gateway([upstream.base_url for upstream in upstream_pair]) as gateway:
        url = websocket_url(gateway) + "/ws/echo"
        async with connect(url) as first, connect(url) as second:
            landed = [(await hello(websocket))["instance"] for websocket in (first, second)]
            told = [
                websocket.response.headers["x-instance"] if websocket.response else None
                for websocket in (first, second)
            ]
    assert sorted(landed) == ["alpha", "beta"]
    assert told == landed


@pytest.mark.parametrize("ws", [RelayProtocol, "auto"], ids=["bytes relay", "uvicorn's protocol"])
async def test_frames_subprotocol_and_closes_cross_the_gateway(
    upstream_pair: tuple[ServerProcess, ServerProcess], ws: type[RelayProtocol] | str
) -> None:
    """As the `gateway` command serves it, or as any other ASGI app (frame by frame, `WebSocketProxy`)."""
    offered = [Subprotocol("chat.v1"), Subprotocol("chat.v2")]
    async with (
        running_gateway([upstream_pair[0].base_url], ws=ws) as gateway,
        connect(websocket_url(gateway) + "/ws/echo?since=7", subprotocols=offered) as websocket,
    ):
        upstream_saw = await hello(websocket)
        assert (upstream_saw["subprotocol"], websocket.subprotocol) == ("chat.v2", "chat.v2")
        assert upstream_saw["query"] == "since=7"
        await websocket.send("text")
        assert await websocket.recv() == "text"
        await websocket.send(b"\x00binary")
        assert await websocket.recv() == b"\x00binary"
        await websocket.send("close:4003:moved")
        assert await close_received(websocket) == (4003, "moved")


async def test_a_killed_upstream_closes_its_clients_with_1014_and_new_ones_land_elsewhere(
    process_group: ProcessGroup,
) -> None:
    alpha, beta = start_upstream(process_group, "alpha"), start_upstream(process_group, "beta")
    # Polling too seldom to notice the crash: new connections must still avoid beta.
    async with running_gateway(
        [alpha.base_url, beta.base_url], gateway_health_interval_seconds=60
    ) as gateway:
        url = websocket_url(gateway) + "/ws/echo"
        async with connect(url) as on_alpha, connect(url) as on_beta:
            assert [(await hello(websocket))["instance"] for websocket in (on_alpha, on_beta)] == [
                "alpha",
                "beta",
            ]
            beta.kill()
            assert await close_received(on_beta) == (1014, "upstream connection lost")
            await on_alpha.send("still here")
            assert await on_alpha.recv() == "still here"
            for _ in range(3):
                async with connect(url) as reconnected:
                    assert (await hello(reconnected))["instance"] == "alpha"


async def test_with_its_only_upstream_killed_a_new_websocket_gets_1014_unreachable_then_1014_no_healthy(
    process_group: ProcessGroup,
) -> None:
    alpha = start_upstream(process_group, "alpha")
    async with running_gateway([alpha.base_url], gateway_health_interval_seconds=60) as gateway:
        alpha.kill()
        async with connect(websocket_url(gateway) + "/ws/echo") as refused:
            assert await close_received(refused) == (1014, "upstream unreachable")
        async with connect(websocket_url(gateway) + "/ws/echo") as unserved:
            assert await close_received(unserved) == (1014, "no healthy upstream")


async def test_the_gateway_command_serves_http_and_websockets(process_group: ProcessGroup) -> None:
    alpha, beta = start_upstream(process_group, "alpha"), start_upstream(process_group, "beta")
    gateway = await asyncio.to_thread(process_group.start_gateway, [alpha, beta])
    async with httpx.AsyncClient(base_url=gateway.base_url, timeout=TIMEOUT) as client:
        ready = (await client.get("/gateway/readyz")).json()
        served_by = {(await client.get("/echo/who")).headers["x-instance"] for _ in range(2)}
    async with connect(gateway.ws_url + "/ws/echo") as websocket:
        assert (await hello(websocket))["instance"] in ("alpha", "beta")
    assert ready == {"status": "ok", "upstreams": 2, "healthy_upstreams": 2}
    assert served_by == {"alpha", "beta"}
