"""The gateway's own parts: upstream list, round-robin, header filtering, and life with no upstream."""

from __future__ import annotations

import httpx
import pytest
from websockets.asyncio.client import connect

from {{ cookiecutter.package_name }}.gateway import create_gateway
from {{ cookiecutter.package_name }}.gateway.reverse_proxy import end_to_end_headers
from {{ cookiecutter.package_name }}.gateway.upstreams import Upstream, UpstreamPool, parse_upstreams
from {{ cookiecutter.package_name }}.settings import Settings

from ..processes import free_port
from ..realtime.support import close_received, websocket_url
from .gateway_support import gateway_settings, running_gateway


def test_upstreams_are_read_from_a_comma_separated_list() -> None:
    upstreams = parse_upstreams(" http://app1:8000/ , https://app2 ,")
    assert [upstream.url for upstream in upstreams] == ["http://app1:8000", "https://app2"]
    assert [upstream.websocket_url for upstream in upstreams] == ["ws://app1:8000", "wss://app2"]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("", "is empty"),
        ("app1:8000", "not a base URL"),
        ("ftp://app1", "not a base URL"),
        ("http://app1:8000?x=1", "not a base URL"),
        ("http://app1:8000,http://app1:8000/", "twice"),
    ],
)
def test_a_bad_upstream_list_is_refused_with_a_clear_message(value: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_upstreams(value)


def test_the_upstream_list_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_UPSTREAMS", "http://app1:8000,http://app2:8000")
    assert Settings(_env_file=None).gateway_upstreams == "http://app1:8000,http://app2:8000"
    with pytest.raises(ValueError, match="GATEWAY_UPSTREAMS"):
        create_gateway(gateway_settings(["not-a-url"]))


def test_choose_takes_turns_over_the_healthy_upstreams_only() -> None:
    alpha, beta = Upstream("http://alpha", healthy=True), Upstream("http://beta", healthy=True)
    gamma = Upstream("http://gamma", healthy=False)
    pool = UpstreamPool([alpha, beta, gamma], health_path="/healthz", health_timeout=1.0)
    assert [pool.choose() for _ in range(4)] == [alpha, beta, alpha, beta]
    pool.mark_down(beta, "connection refused")
    assert [pool.choose() for _ in range(2)] == [alpha, alpha]
    pool.mark_down(alpha, "connection refused")
    assert pool.choose() is None


def test_hop_by_hop_headers_and_those_named_by_connection_are_dropped() -> None:
    headers = [
        (b"Connection", b"keep-alive, X-Private"),
        (b"X-Private", b"1"),
        (b"Keep-Alive", b"timeout=5"),
        (b"Transfer-Encoding", b"chunked"),
        (b"Upgrade", b"h2c"),
        (b"Content-Type", b"text/plain"),
        (b"Set-Cookie", b"a=1"),
        (b"Set-Cookie", b"b=2"),
    ]
    assert end_to_end_headers(headers) == [
        (b"Content-Type", b"text/plain"),
        (b"Set-Cookie", b"a=1"),
        (b"Set-Cookie", b"b=2"),
    ]


async def test_with_no_healthy_upstream_http_gets_503_with_retry_after_and_websockets_1014() -> None:
    async with (
        running_gateway([f"http://127.0.0.1:{free_port()}"]) as gateway,
        httpx.AsyncClient(base_url=gateway, timeout=5.0) as client,
    ):
        proxied = await client.post("/rooms", json={"name": "lobby"})
        ready = await client.get("/gateway/readyz")
        alive = await client.get("/gateway/healthz")
        async with connect(websocket_url(gateway) + "/ws/rooms/lobby") as websocket:
            closed = await close_received(websocket)
    assert (proxied.status_code, proxied.json()) == (503, {"detail": "no healthy upstream"})
    assert int(proxied.headers["Retry-After"]) >= 1
    assert ready.status_code == 503
    assert ready.json() == {"status": "unavailable", "upstreams": 1, "healthy_upstreams": 0}
    assert (alive.status_code, alive.json()) == (200, {"status": "ok"})
    assert closed == (1014, "no healthy upstream")
