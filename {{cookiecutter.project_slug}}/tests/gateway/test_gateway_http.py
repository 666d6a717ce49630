"""The gateway's HTTP reverse proxy over real upstream processes."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator

import httpx
import pytest

from ..processes import ProcessGroup, ServerProcess, wait_until
from .gateway_support import TIMEOUT, running_gateway, start_upstream

pytestmark = pytest.mark.slow

UpstreamPair = tuple[ServerProcess, ServerProcess]


async def test_requests_take_turns_over_the_upstreams(upstream_pair: UpstreamPair) -> None:
    async with (
        running_gateway([upstream.base_url for upstream in upstream_pair]) as gateway,
        httpx.AsyncClient(base_url=gateway, timeout=TIMEOUT) as client,
    ):
        served_by = [(await client.get("/echo/turns")).headers["x-instance"] for _ in range(6)]
    assert served_by in (["alpha", "beta"] * 3, ["beta", "alpha"] * 3)


@pytest.mark.parametrize("method", ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "PURGE"])
async def test_every_method_path_query_and_body_is_relayed(upstream_pair: UpstreamPair, method: str) -> None:
    body = b"" if method in ("GET", "HEAD", "OPTIONS") else b"payload"
    async with (
        running_gateway([upstream_pair[0].base_url]) as gateway,
        httpx.AsyncClient(base_url=gateway, timeout=TIMEOUT) as client,
    ):
        response = await client.request(method, "/echo/a%2Fb/c?x=1&y=%C3%A9", content=body)
    assert response.status_code == 200
    if method == "HEAD":
        assert response.content == b""
        return
    echoed = response.json()
    assert (echoed["method"], echoed["path"], echoed["query"]) == (method, "/echo/a%2Fb/c", "x=1&y=%C3%A9")
    assert echoed["body"] == body.decode()


async def test_upstream_status_and_headers_are_relayed(upstream_pair: UpstreamPair) -> None:
    async with (
        running_gateway([upstream_pair[0].base_url]) as gateway,
        httpx.AsyncClient(base_url=gateway, timeout=TIMEOUT) as client,
    ):
        response = await client.post("/echo/teapot?status=418", content=b"{}")
    assert response.status_code == 418
    assert response.headers["x-instance"] == "alpha"
    assert response.headers["content-type"] == "application/json"
    assert response.cookies["session"] == "issued-by-alpha"


async def test_hop_by_hop_headers_are_removed_both_ways(upstream_pair: UpstreamPair) -> None:
    hop_by_hop = {
        "Connection": "x-client-hop",
        "X-Client-Hop": "for the gateway only",
        "Keep-Alive": "timeout=30",
        "TE": "trailers",
        "Proxy-Authorization": "Basic Z2F0ZXdheTpvbmx5",
    }
    async with (
        running_gateway([upstream_pair[0].base_url]) as gateway,
        httpx.AsyncClient(base_url=gateway, timeout=TIMEOUT) as client,
    ):
        response = await client.get("/echo/hops", headers={**hop_by_hop, "X-End-To-End": "kept"})
    received = dict(response.json()["headers"])
    assert received["x-end-to-end"] == "kept"
    assert not {name.lower() for name in hop_by_hop} & received.keys()
    assert "x-upstream-hop" not in response.headers
    assert "keep-alive" not in response.headers
    assert response.headers.get_list("server") == ["uvicorn"]


async def test_forwarding_headers_describe_the_client(upstream_pair: UpstreamPair) -> None:
    spoofed = {"X-Forwarded-For": "203.0.113.9", "X-Forwarded-Host": "spoofed", "X-Forwarded-Proto": "https"}
    # No proxy headers are trusted: the client is on the public side of the gateway.
    async with (
        running_gateway([upstream_pair[0].base_url], proxy_headers=False) as gateway,
        httpx.AsyncClient(base_url=gateway, timeout=TIMEOUT) as client,
    ):
        response = await client.get("/echo/forwarded", headers=spoofed)
    received = dict(response.json()["headers"])
    assert received["x-forwarded-for"] == "203.0.113.9, 127.0.0.1"
    assert received["x-forwarded-proto"] == "http"
    assert received["x-forwarded-host"] == gateway.removeprefix("http://")
    # Host as the client sent it: the URLs the upstream builds (redirects) are the gateway's.
    assert received["host"] == gateway.removeprefix("http://")


async def test_cookies_set_for_one_client_never_reach_another(upstream_pair: UpstreamPair) -> None:
    async with running_gateway([upstream_pair[0].base_url]) as gateway:
        async with httpx.AsyncClient(base_url=gateway, timeout=TIMEOUT) as first:
            assert (await first.get("/echo/login")).cookies["session"] == "issued-by-alpha"
        async with httpx.AsyncClient(base_url=gateway, timeout=TIMEOUT) as second:
            received = dict((await second.get("/echo/anonymous")).json()["headers"])
    assert "cookie" not in received


async def test_the_response_body_is_streamed(upstream_pair: UpstreamPair) -> None:
    upstream = upstream_pair[0]
    async with (
        running_gateway([upstream.base_url]) as gateway,
        httpx.AsyncClient(timeout=TIMEOUT) as client,
        asyncio.timeout(TIMEOUT),
        client.stream("GET", gateway + "/held-stream") as response,
    ):
        chunks = response.aiter_raw()
        # The upstream holds the rest back until released: a buffering gateway would never pass this line.
        assert await anext(chunks) == b"first;"
        await client.post(upstream.base_url + "/release")
        assert b"".join([chunk async for chunk in chunks]) == b"second"


async def test_the_request_body_is_streamed(upstream_pair: UpstreamPair) -> None:
    upstream = upstream_pair[0]
    first, second = b"a" * 100_000, b"b" * 100_000

    async def upstream_has_the_first_chunk() -> bool:
        async with httpx.AsyncClient(timeout=TIMEOUT) as observer:
            progress = (await observer.get(upstream.base_url + "/upload-progress")).json()
        return bool(progress["received"] >= len(first))

    async def body() -> AsyncIterator[bytes]:
        yield first
        # Held back until the upstream has the first chunk: with a buffering gateway it never would.
        await wait_until(upstream_has_the_first_chunk)
        yield second

    async with (
        running_gateway([upstream.base_url]) as gateway,
        httpx.AsyncClient(timeout=TIMEOUT) as client,
    ):
        response = await client.post(gateway + "/upload", content=body())
    assert response.json() == {
        "received": len(first) + len(second),
        "sha256": hashlib.sha256(first + second).hexdigest(),
    }


async def test_a_slow_upstream_is_a_504(upstream_pair: UpstreamPair) -> None:
    async with (
        running_gateway([upstream_pair[0].base_url], gateway_upstream_timeout_seconds=0.3) as gateway,
        httpx.AsyncClient(base_url=gateway, timeout=TIMEOUT) as client,
    ):
        response = await client.get("/slow?seconds=3")
    assert response.status_code == 504
    assert response.json() == {"detail": "upstream timed out"}


async def test_a_refused_connection_takes_the_upstream_out_and_the_request_goes_on(
    process_group: ProcessGroup,
) -> None:
    alpha, beta = start_upstream(process_group, "alpha"), start_upstream(process_group, "beta")
    # Polling too seldom to notice the crash: only the refused connection can take beta out of rotation.
    async with (
        running_gateway([alpha.base_url, beta.base_url], gateway_health_interval_seconds=60) as gateway,
        httpx.AsyncClient(base_url=gateway, timeout=TIMEOUT) as client,
    ):
        beta.kill()
        responses = [await client.post("/echo/after-crash", content=b"sent once") for _ in range(4)]
        ready = await client.get("/gateway/readyz")
    assert [response.status_code for response in responses] == [200] * 4
    assert {response.headers["x-instance"] for response in responses} == {"alpha"}
    assert {response.json()["body"] for response in responses} == {"sent once"}
    assert ready.json()["healthy_upstreams"] == 1


async def test_a_refused_connection_with_no_other_upstream_is_a_502(process_group: ProcessGroup) -> None:
    alpha = start_upstream(process_group, "alpha")
    async with (
        running_gateway([alpha.base_url], gateway_health_interval_seconds=60) as gateway,
        httpx.AsyncClient(base_url=gateway, timeout=TIMEOUT) as client,
    ):
        alpha.kill()
        refused = await client.get("/echo/after-crash")
        then = await client.get("/echo/after-crash")
    assert (refused.status_code, refused.json()) == (502, {"detail": "upstream unreachable"})
    assert (then.status_code, then.json()) == (503, {"detail": "no healthy upstream"})


async def test_a_dead_upstream_is_skipped_and_brought_back(process_group: ProcessGroup) -> None:
    alpha, beta = start_upstream(process_group, "alpha"), start_upstream(process_group, "beta")
    async with (
        running_gateway([alpha.base_url, beta.base_url]) as gateway,
        httpx.AsyncClient(base_url=gateway, timeout=TIMEOUT) as client,
    ):

        async def healthy_upstreams(count: int) -> None:
            async def reached() -> bool:
                return bool((await client.get("/gateway/readyz")).json()["healthy_upstreams"] == count)

            await wait_until(reached)

        async def served_by(requests: int) -> list[str]:
            responses = [await client.get("/echo/who") for _ in range(requests)]
            assert all(response.status_code == 200 for response in responses)
            return [response.headers["x-instance"] for response in responses]

        beta.kill()
        await healthy_upstreams(1)
        assert await served_by(4) == ["alpha"] * 4

        await asyncio.to_thread(start_upstream, process_group, "beta", beta.port)
        await healthy_upstreams(2)
        assert sorted(await served_by(4)) == ["alpha", "alpha", "beta", "beta"]
