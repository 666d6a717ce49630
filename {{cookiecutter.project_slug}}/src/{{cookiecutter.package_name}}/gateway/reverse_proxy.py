"""The HTTP half of the gateway: each request relayed to one upstream, both bodies streamed."""

from __future__ import annotations

from collections.abc import Iterable

import httpx
from starlette.background import BackgroundTask
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from ..realtime.proxy import forwarding_headers
from .upstreams import Upstream, UpstreamPool

# RFC 9110 section 7.6.1: these describe one connection, not the message, and never cross a proxy.
HOP_BY_HOP_HEADERS = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
# This server already answered Expect; X-Forwarded-* are recomputed. Host goes through as the client sent it,
# so that the URLs an upstream builds (redirects) point at the gateway, not at the upstream's own address.
REWRITTEN_REQUEST_HEADERS = frozenset({"expect", "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host"})
# The server answering the client writes its own.
REWRITTEN_RESPONSE_HEADERS = frozenset({"date", "server"})


def end_to_end_headers(
    headers: Iterable[tuple[bytes, bytes]], rewritten: frozenset[str] = frozenset()
) -> list[tuple[bytes, bytes]]:
    """`headers` without hop-by-hop ones (including those the `Connection` header names) or `rewritten`."""
    headers = list(headers)
    named_by_connection = {
        token.strip().lower()
        for name, value in headers
        if name.lower() == b"connection"
        for token in value.decode("latin-1").split(",")
    }
    dropped = HOP_BY_HOP_HEADERS | rewritten | named_by_connection
    return [(name, value) for name, value in headers if name.decode("latin-1").lower() not in dropped]


def problem(status_code: int, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status_code, headers=headers)


class ReverseProxy:
    """Relay a request to the next healthy upstream; answer 503, 502 or 504 when that fails.

    An upstream that cannot be connected to is marked down in `pool` and the request goes to the next one:
    it never reached the first, so even a POST is safe to send again. `timeout` applies to each request
    (connect, write, and the wait for each chunk of the response). The 503 of "no healthy upstream" says
    in `Retry-After` when the health checks will have looked again.
    """

    def __init__(
        self, client: httpx.AsyncClient, pool: UpstreamPool, timeout: httpx.Timeout, retry_after: int = 1
    ) -> None:
        self.client = client
        self.pool = pool
        self.timeout = timeout
        self.retry_after = retry_after

    async def __call__(self, request: Request) -> Response:
        failure = problem(503, "no healthy upstream", {"Retry-After": str(self.retry_after)})
        for _attempt in range(len(self.pool.upstreams)):
            upstream = self.pool.choose()
            if upstream is None:
                break
            try:
                incoming = await self.client.send(self._request(upstream, request), stream=True)
            except httpx.ConnectTimeout:
                self.pool.mark_down(upstream, "connect timeout")
                failure = problem(504, "upstream did not accept the connection in time")
                continue
            except httpx.ConnectError as error:
                self.pool.mark_down(upstream, str(error) or "connection failed")
                failure = problem(502, "upstream unreachable")
                continue
            except httpx.TimeoutException:
                return problem(504, "upstream timed out")
            except httpx.TransportError as error:
                return problem(502, f"upstream failed: {type(error).__name__}")
            except ClientDisconnect:
                return problem(400, "the client disconnected before the end of the request body")
            response = StreamingResponse(
                incoming.aiter_raw(),
                status_code=incoming.status_code,
                background=BackgroundTask(incoming.aclose),
            )
            response.raw_headers = end_to_end_headers(incoming.headers.raw, REWRITTEN_RESPONSE_HEADERS)
            return response
        return failure

    def _request(self, upstream: Upstream, request: Request) -> httpx.Request:
        forwarded = [
            (name.encode("latin-1"), value.encode("latin-1")) for name, value in forwarding_headers(request)
        ]
        return httpx.Request(
            request.method,
            self._url(upstream, request),
            headers=end_to_end_headers(request.headers.raw, REWRITTEN_REQUEST_HEADERS) + forwarded,
            content=request.stream() if _has_body(request) else None,
            extensions={"timeout": self.timeout.as_dict()},
        )

    @staticmethod
    def _url(upstream: Upstream, request: Request) -> str:
        """The upstream URL with the client's path exactly as sent (still percent-encoded) and its query."""
        raw_path: bytes = request.scope.get("raw_path") or request.scope["path"].encode()
        query: bytes = request.scope.get("query_string", b"")
        url = upstream.url + raw_path.decode("latin-1")
        return f"{url}?{query.decode('latin-1')}" if query else url


def _has_body(request: Request) -> bool:
    return "content-length" in request.headers or "transfer-encoding" in request.headers
