"""The gateway ASGI app, built by `create_gateway()` (a uvicorn `--factory`).

A plain Starlette app rather than FastAPI: every path outside `/gateway/` belongs to the upstreams,
`/docs` and `/openapi.json` included, but `/metrics`, which serves the gateway's own metrics. The
instances' metrics are for a scraper on the internal network, never for the clients of the gateway. A path
with a `.` or `..` segment (percent-encoded or not) is refused with 400 rather than relayed: the upstream
would see it resolved (`/x/../metrics` is `/metrics`), which the routes here never did.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from http.cookiejar import CookieJar, DefaultCookiePolicy
from urllib.parse import unquote

import httpx
from starlette import status
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket

from ..http_limits import RequestLimitsMiddleware
from ..observability import (
    MetricsMiddleware,
    RequestIdMiddleware,
    TrafficMetrics,
    install_redaction,
    metrics_endpoint,
    new_registry,
)
from ..realtime.proxy import UpstreamUnreachable, WebSocketProxy, accept_and_close
from ..settings import Settings, get_settings
from .metrics import UpstreamCollector
from .reverse_proxy import ReverseProxy
from .upstreams import UpstreamPool, parse_upstreams
from .websocket_relay import RELAY_EXTENSION, relay_to_upstream


class Gateway:
    """The upstream pool, its health polling, and the relays for HTTP requests and WebSockets."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.pool = UpstreamPool(
            parse_upstreams(settings.gateway_upstreams),
            health_path=settings.gateway_health_path,
            health_timeout=settings.gateway_health_timeout_seconds,
        )
        timeout = httpx.Timeout(
            settings.gateway_upstream_timeout_seconds, connect=settings.gateway_connect_timeout_seconds
        )
        self.client = httpx.AsyncClient(
            timeout=timeout,
            # The number of clients served bounds the connections; a pool limit would only queue them.
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=64),
            # Cookies belong to each end client: the shared client must never keep one.
            cookies=CookieJar(policy=DefaultCookiePolicy(allowed_domains=[])),
        )
        retry_after = math.ceil(self.settings.gateway_health_interval_seconds)
        self.reverse_proxy = ReverseProxy(self.client, self.pool, timeout, retry_after)

    @asynccontextmanager
    async def lifespan(self, _app: Starlette) -> AsyncIterator[None]:
        async with self.client:
            await self.pool.check(self.client)
            interval = self.health_interval
            watcher = asyncio.create_task(
                self.pool.watch(self.client, interval, first_delay=random.uniform(0, interval)),
                name="gateway-health",
            )
            try:
                yield
            finally:
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watcher

    @property
    def health_interval(self) -> float:
        """Each worker's polling interval: N workers polling at staggered times every N intervals probe
        each upstream once per interval between them, as one process would. A worker that fails to
        connect to an upstream still takes it out of its own rotation at once."""
        return self.settings.gateway_health_interval_seconds * self.settings.gateway_workers

    async def healthz(self, _request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    async def readyz(self, _request: Request) -> JSONResponse:
        healthy = len(self.pool.healthy)
        body = {
            "status": "ok" if healthy else "unavailable",
            "upstreams": len(self.pool.upstreams),
            "healthy_upstreams": healthy,
        }
        return JSONResponse(body, status_code=200 if healthy else 503)

    async def relay(self, scope: Scope, receive: Receive, send: Send) -> None:
        raw_path: bytes = scope.get("raw_path") or scope["path"].encode()
        if has_dot_segment(raw_path):
            if scope["type"] == "http":
                refusal = JSONResponse({"detail": "paths with . or .. segments are refused"}, 400)
                await refusal(scope, receive, send)
            elif scope["type"] == "websocket":
                websocket = WebSocket(scope, receive, send)
                await accept_and_close(websocket, status.WS_1008_POLICY_VIOLATION, "bad path")
            return
        if scope["type"] == "http":
            response = await self.reverse_proxy(Request(scope, receive))
            await response(scope, receive, send)
        elif scope["type"] == "websocket":
            await self._relay_websocket(scope, receive, send)

    async def _relay_websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Relay to the next healthy upstream; one that cannot be reached is marked down, the next tried.

        Under `RelayProtocol` (the `gateway` command) the frames cross as bytes; under another server's
        WebSocket protocol, `WebSocketProxy` relays them one by one.
        """
        websocket = WebSocket(scope, receive, send)
        url_path = (scope.get("raw_path") or scope["path"].encode()).decode("latin-1")
        timeout = self.settings.gateway_connect_timeout_seconds
        as_bytes = RELAY_EXTENSION in scope.get("extensions", {})
        # 1014 for any failure to reach an instance: 1013 means a client too slow everywhere else.
        code, reason = status.WS_1014_BAD_GATEWAY, "no healthy upstream"
        for _attempt in range(len(self.pool.upstreams)):
            upstream = self.pool.choose()
            if upstream is None:
                break
            url = upstream.websocket_url + url_path
            try:
                if as_bytes:
                    await relay_to_upstream(scope, receive, send, url, open_timeout=timeout)
                    return
                proxy = WebSocketProxy(websocket, url, open_timeout=timeout)
                await proxy.connect()
            except UpstreamUnreachable as unreachable:
                self.pool.mark_down(upstream, str(unreachable))
                code, reason = status.WS_1014_BAD_GATEWAY, "upstream unreachable"
                continue
            async with proxy:
                await proxy()
            return
        await accept_and_close(websocket, code, reason)


def has_dot_segment(raw_path: bytes) -> bool:
    """Whether a request path has a `.` or `..` segment, percent-encoded or not."""
    segments = unquote(raw_path.decode("latin-1")).replace("\\", "/").split("/")
    return any(segment in (".", "..") for segment in segments)


def create_gateway(settings: Settings | None = None) -> Starlette:
    settings = settings or get_settings()
    install_redaction()
    gateway = Gateway(settings)
    registry = new_registry()
    registry.register(UpstreamCollector(gateway.pool))
    return Starlette(
        routes=[
            Route("/gateway/healthz", gateway.healthz),
            Route("/gateway/readyz", gateway.readyz),
            Route("/metrics", metrics_endpoint(registry)),
            Mount("", app=gateway.relay),
        ],
        middleware=[
            Middleware(RequestIdMiddleware),
            Middleware(MetricsMiddleware, metrics=TrafficMetrics(registry, prefix="gateway_")),
            Middleware(
                RequestLimitsMiddleware,
                max_headers=settings.http_max_headers,
                max_header_bytes=settings.http_max_header_bytes,
                max_body_bytes=settings.http_max_body_bytes,
            ),
        ],
        lifespan=gateway.lifespan,
    )
