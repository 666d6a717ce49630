"""WebSocketProxy between a real client and a real upstream server, both served over loopback sockets."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus
from websockets.typing import Origin, Subprotocol

from {{ cookiecutter.package_name }}.realtime.proxy import WebSocketProxy

from ..processes import free_port, serve_in_loop, wait_until
from .support import close_received, hello, websocket_url
from .upstream_app import create_upstream_app


@dataclass
class ProxySessions:
    """How many proxied sessions have started and how many have returned."""

    started: int = 0
    finished: int = 0

    async def all_finished(self) -> bool:
        return self.finished == self.started


def create_proxy_app(upstream_ws_url: str, sessions: ProxySessions) -> Starlette:
    """Relays every WebSocket path to the same path upstream."""

    async def relay(websocket: WebSocket) -> None:
        sessions.started += 1
        try:
            async with WebSocketProxy(websocket, upstream_ws_url + websocket.scope["path"]) as proxy:
                await proxy()
        finally:
            sessions.finished += 1

    return Starlette(routes=[WebSocketRoute("/{path:path}", relay)])


def relay_tasks() -> list[asyncio.Task[Any]]:
    return [task for task in asyncio.all_tasks() if task.get_name().startswith("websocket-proxy")]


async def last_upstream_close(upstream: str) -> dict[str, Any]:
    """The code and reason of the last WebSocket closed on the upstream at `upstream`, once there is one."""
    closes: list[dict[str, Any]] = []
    async with httpx.AsyncClient(base_url=upstream) as client:

        async def any_closed() -> bool:
            closes[:] = (await client.get("/websocket-closes")).json()
            return bool(closes)

        await wait_until(any_closed)
    return closes[-1]


@dataclass
class Servers:
    upstream: str
    proxy: str
    sessions: ProxySessions

    @property
    def proxy_ws(self) -> str:
        return websocket_url(self.proxy)


@pytest.fixture
async def servers() -> AsyncIterator[Servers]:
    """An upstream and a proxy in front of it; afterwards, every session has returned and left no task."""
    sessions = ProxySessions()
    async with (
        serve_in_loop(create_upstream_app("upstream")) as upstream,
        serve_in_loop(create_proxy_app(websocket_url(upstream), sessions)) as proxy,
    ):
        yield Servers(upstream, proxy, sessions)
        await wait_until(sessions.all_finished)
        assert relay_tasks() == []


async def test_text_and_binary_frames_flow_both_ways(servers: Servers) -> None:
    async with connect(servers.proxy_ws + "/ws/echo") as websocket:
        assert (await hello(websocket))["instance"] == "upstream"
        await websocket.send("héllo")
        assert await websocket.recv() == "héllo"
        await websocket.send(b"\x00\x01\xff")
        assert await websocket.recv() == b"\x00\x01\xff"
        large = bytes(range(256)) * 2048
        await websocket.send(large)
        assert await websocket.recv() == large


async def test_subprotocol_is_negotiated_end_to_end(servers: Servers) -> None:
    offered = [Subprotocol("chat.v1"), Subprotocol("chat.v2")]
    async with connect(servers.proxy_ws + "/ws/echo", subprotocols=offered) as websocket:
        upstream_saw = await hello(websocket)
        assert upstream_saw["offered"] == ["chat.v1", "chat.v2"]
        assert upstream_saw["subprotocol"] == "chat.v2"
        assert websocket.subprotocol == "chat.v2"
    async with connect(servers.proxy_ws + "/ws/echo") as websocket:
        assert (await hello(websocket))["offered"] == []
        assert websocket.subprotocol is None


async def test_query_credentials_and_forwarding_headers_reach_the_upstream() -> None:
    sessions = ProxySessions()
    headers = {
        "Authorization": "Bearer abc.def.ghi",
        "Cookie": "session=s1",
        "X-Forwarded-For": "203.0.113.9",
        "X-Not-Forwarded": "private",
    }
    async with serve_in_loop(create_upstream_app("upstream")) as upstream:
        # No proxy headers are trusted: the client is on the public side, as a gateway's clients are.
        proxy_app = create_proxy_app(websocket_url(upstream), sessions)
        async with serve_in_loop(proxy_app, proxy_headers=False) as proxy:
            url = websocket_url(proxy) + "/ws/echo?since=41&token=t"
            async with connect(
                url, additional_headers=headers, origin=Origin("http://example.test")
            ) as websocket:
                upstream_saw = await hello(websocket)
            await wait_until(sessions.all_finished)
    received = dict(upstream_saw["headers"])
    assert upstream_saw["query"] == "since=41&token=t"
    assert received["authorization"] == "Bearer abc.def.ghi"
    assert received["cookie"] == "session=s1"
    assert received["origin"] == "http://example.test"
    assert received["x-forwarded-for"] == "203.0.113.9, 127.0.0.1"
    assert received["x-forwarded-proto"] == "http"
    assert received["x-forwarded-host"] == proxy.removeprefix("http://")
    assert "x-not-forwarded" not in received
    # The client offered permessage-deflate (the websockets default); the private hop never does.
    assert "sec-websocket-extensions" not in received


async def test_upstream_handshake_headers_reach_the_client(servers: Servers) -> None:
    async with connect(servers.proxy_ws + "/ws/echo") as websocket:
        assert websocket.response is not None
        assert websocket.response.headers["x-instance"] == "upstream"


async def test_upstream_close_code_and_reason_reach_the_client(servers: Servers) -> None:
    async with connect(servers.proxy_ws + "/ws/echo") as websocket:
        await hello(websocket)
        await websocket.send("close:4001:room closed")
        assert await close_received(websocket) == (4001, "room closed")


async def test_client_close_code_and_reason_reach_the_upstream(servers: Servers) -> None:
    async with connect(servers.proxy_ws + "/ws/echo") as websocket:
        await hello(websocket)
        await websocket.close(4002, "leaving")
    assert await last_upstream_close(servers.upstream) == {"code": 4002, "reason": "leaving"}


async def test_a_vanished_client_closes_the_upstream_with_going_away(servers: Servers) -> None:
    websocket = await connect(servers.proxy_ws + "/ws/echo")
    await hello(websocket)
    websocket.transport.abort()
    # Servers report a lost connection as 1006, or as 1005 like a close frame without a code.
    assert await last_upstream_close(servers.upstream) in (
        {"code": 1001, "reason": "client connection lost"},
        {"code": 1000, "reason": ""},
    )


async def test_no_relay_task_outlives_its_session(servers: Servers) -> None:
    async with connect(servers.proxy_ws + "/ws/echo") as websocket:
        await hello(websocket)
        assert len(relay_tasks()) == 2
    await wait_until(servers.sessions.all_finished)
    assert relay_tasks() == []


async def test_server_shutdown_closes_both_sides_with_service_restart() -> None:
    sessions = ProxySessions()
    async with serve_in_loop(create_upstream_app("upstream")) as upstream:
        async with serve_in_loop(create_proxy_app(websocket_url(upstream), sessions)) as proxy:
            websocket = await connect(websocket_url(proxy) + "/ws/echo")
            await hello(websocket)
        assert (await close_received(websocket))[0] == 1012
        assert (await last_upstream_close(upstream))["code"] == 1012
    assert sessions.finished == sessions.started == 1
    assert relay_tasks() == []


async def test_an_unreachable_upstream_closes_the_client_with_1014() -> None:
    sessions = ProxySessions()
    nobody = f"ws://127.0.0.1:{free_port()}"
    async with serve_in_loop(create_proxy_app(nobody, sessions)) as proxy:
        url = websocket_url(proxy) + "/ws/echo"
        # A browser only reads the code if one of its subprotocols was accepted.
        async with connect(url, subprotocols=[Subprotocol("chat.v1")]) as websocket:
            assert websocket.subprotocol == "chat.v1"
            assert await close_received(websocket) == (1014, "upstream unreachable")
        await wait_until(sessions.all_finished)


async def test_an_upstream_refusal_reaches_the_client_with_its_status(servers: Servers) -> None:
    with pytest.raises(InvalidStatus) as refused:
        await connect(servers.proxy_ws + "/ws/refuse")
    assert refused.value.response.status_code == 401
    assert refused.value.response.body == b"members only"
