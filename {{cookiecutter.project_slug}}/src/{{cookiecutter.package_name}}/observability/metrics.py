"""Prometheus metrics of HTTP requests and WebSocket connections, shared by the app and the gateway.

`MetricsMiddleware` records each request and connection in a `TrafficMetrics`; a WebSocket's frames are
counted in plain integers, read when Prometheus scrapes. Labels only ever take a few
values, whatever clients send: the route template (`/rooms/{room}`, never the path), the method (unknown
ones count as `other`), the status, and the close code the server chose. Each app has its own
`CollectorRegistry`, so that several apps (tests) can live in one process.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

UNMATCHED_ROUTE = "unmatched"
ENGINE_SERVER_SEND = "realtime.server_send"
"""The scope extension by which the engine writes a socket's frames to the server's `send` directly
(`realtime.outbox.SERVER_SEND`, not imported: the gateway loads no more of the engine than its proxy); the
metrics hand it the route's `FrameCounts` on the handshake."""
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# From a cached read to a password hash or a slow upstream: 5 ms to 10 s.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def new_registry() -> CollectorRegistry:
    """A registry with the process metrics (CPU, memory, file descriptors, garbage collection)."""
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry


def metrics_response(registry: CollectorRegistry) -> Response:
    """The Prometheus text exposition of `registry`."""
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


def metrics_endpoint(registry: CollectorRegistry) -> Callable[[Request], Awaitable[Response]]:
    """An endpoint serving `registry`, for a plain Starlette route (so it stays out of the OpenAPI schema)."""

    async def metrics(_request: Request) -> Response:
        return metrics_response(registry)

    return metrics


def route_template(scope: Scope, original: Mapping[str, Any]) -> str:
    """The template of the route that served `scope` (`/rooms/{room}`), or `unmatched`.

    Routers record the route in the scope, or else its endpoint may know it (`routers.realtime`'s do); a
    mount does not in every FastAPI version, so the app's routes are matched again against `original`, the
    scope as it was before routing changed it.
    """
    route = scope.get("route") or getattr(scope.get("endpoint"), "route", None)
    template = getattr(route, "path_format", None)
    if isinstance(template, str):
        return template
    for route in getattr(scope.get("app"), "routes", ()):
        match, _child_scope = route.matches(original)
        if match is Match.FULL:
            return str(getattr(route, "path_format", UNMATCHED_ROUTE))
    return UNMATCHED_ROUTE


class TrafficMetrics:
    """The HTTP and WebSocket metrics of one app, named with `prefix` (`gateway_` for the gateway)."""

    def __init__(self, registry: CollectorRegistry, prefix: str = "") -> None:
        def counter(name: str, documentation: str, labels: tuple[str, ...] = ("route",)) -> Counter:
            return Counter(prefix + name, documentation, labels, registry=registry)

        self.http_duration = Histogram(
            prefix + "http_request_duration_seconds",
            "Time to answer an HTTP request, by method, route template and status",
            ("method", "route", "status"),
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.http_in_progress = Gauge(
            prefix + "http_requests_in_progress", "HTTP requests being answered", registry=registry
        )
        self.http_request_bytes = counter("http_request_bytes", "Bytes of HTTP request bodies received")
        self.http_response_bytes = counter("http_response_bytes", "Bytes of HTTP response bodies sent")
        self.websocket_open = Gauge(
            prefix + "websocket_connections",
            "Open WebSocket connections, by route",
            ("route",),
            registry=registry,
        )
        self.websocket_accepted = counter("websocket_connections_accepted", "WebSocket connections accepted")
        self.websocket_closes = counter(
            "websocket_closes", "WebSocket connections closed by the server, by close code", ("route", "code")
        )
        self.websocket_frames = WebSocketFrames(prefix)
        registry.register(self.websocket_frames)


class FrameCounts:
    """The messages and bytes of one route's WebSocket connections: plain integers, as a frame must not
    take a lock (a Prometheus counter's `inc` does)."""

    __slots__ = ("bytes_received", "bytes_sent", "received", "sent")

    def __init__(self) -> None:
        self.received = self.bytes_received = self.sent = self.bytes_sent = 0


class WebSocketFrames(Collector):
    """WebSocket messages and bytes both ways, by route, counted in `FrameCounts` and read at each scrape."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.routes: dict[str, FrameCounts] = {}

    def route(self, route: str) -> FrameCounts:
        counts = self.routes.get(route)
        if counts is None:
            counts = self.routes[route] = FrameCounts()
        return counts

    def collect(self) -> Iterator[Metric]:
        families = (
            ("websocket_messages_received", "WebSocket messages from clients", "received"),
            ("websocket_messages_sent", "WebSocket messages written to clients", "sent"),
            ("websocket_received_bytes", "Bytes of WebSocket messages received", "bytes_received"),
            ("websocket_sent_bytes", "Bytes of WebSocket messages sent", "bytes_sent"),
        )
        for name, documentation, field in families:
            family = CounterMetricFamily(self.prefix + name, documentation, labels=["route"])
            for route, counts in sorted(self.routes.items()):
                family.add_metric([route], getattr(counts, field))
            yield family


def _size(message: Message, key: str = "bytes") -> int:
    """The payload size of an ASGI body or WebSocket message, in bytes (an ASCII text is not encoded)."""
    data = message.get(key)
    if data is None:
        text = message.get("text")
        if text is None:
            return 0
        return len(text) if text.isascii() else len(text.encode())
    return len(data)


class MetricsMiddleware:
    """Record every HTTP request and WebSocket connection served by `app` in `metrics`."""

    def __init__(self, app: ASGIApp, metrics: TrafficMetrics) -> None:
        self.app = app
        self.metrics = metrics

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        # A plain call returning the awaitable: one frame less under a WebSocket for its life.
        if scope["type"] == "http":
            return self._http(scope, receive, send)
        if scope["type"] == "websocket":
            return self._websocket(scope, receive, send)
        return self.app(scope, receive, send)

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        original = dict(scope)
        status = 500  # what the client gets if the app fails before it answers
        received = sent = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += _size(message, "body")
            return message

        async def counting_send(message: Message) -> None:
            nonlocal status, sent
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                sent += _size(message, "body")
            await send(message)

        metrics = self.metrics
        started = time.perf_counter()
        metrics.http_in_progress.inc()
        try:
            await self.app(scope, counting_receive, counting_send)
        finally:
            metrics.http_in_progress.dec()
            route = route_template(scope, original)
            method = scope["method"] if scope["method"] in KNOWN_METHODS else "other"
            metrics.http_duration.labels(method, route, str(status)).observe(time.perf_counter() - started)
            metrics.http_request_bytes.labels(route).inc(received)
            metrics.http_response_bytes.labels(route).inc(sent)

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        counting = _CountingWebSocketSend(send, self.metrics, scope)

        async def counting_receive() -> Message:
            message = await receive()
            counts = counting.counts
            if counts is not None and message["type"] == "websocket.receive":
                counts.received += 1
                counts.bytes_received += _size(message)
            return message

        try:
            await self.app(scope, counting_receive, counting)
        finally:
            counting.ended()


class _CountingWebSocketSend:
    """A WebSocket's `send` that counts the connection on its handshake and close, and each frame in plain
    integers; a plain call returning the server's awaitable, so a frame pays no coroutine of its own."""

    __slots__ = ("counts", "metrics", "open", "original", "route", "scope", "send")

    def __init__(self, send: Send, metrics: TrafficMetrics, scope: Scope) -> None:
        self.send = send
        self.metrics = metrics
        self.scope = scope
        self.original = dict(scope)
        self.route: str | None = None
        self.counts: FrameCounts | None = None
        self.open: Gauge | None = None

    def __call__(self, message: Message) -> Awaitable[None]:
        counts = self.counts
        kind = message["type"]
        if kind == "websocket.send" and counts is not None:
            counts.sent += 1
            counts.bytes_sent += _size(message)
        elif kind == "websocket.accept":
            self._accepted()
{%- if cookiecutter.use_gateway == "y" %}
        elif kind == "websocket.relay" and counts is not None:
            # The gateway's server relays the frames below ASGI and counts them itself, here.
            message["counts"] = counts
{%- endif %}
        elif kind == "websocket.close":
            route = self.route or route_template(self.scope, self.original)
            self.metrics.websocket_closes.labels(route, str(message.get("code", 1000))).inc()
        return self.send(message)

    def _accepted(self) -> None:
        metrics = self.metrics
        self.route = route = route_template(self.scope, self.original)
        self.original = {}  # the route is known: no copy of the scope kept for the connection's life
        self.counts = metrics.websocket_frames.route(route)
        extensions = self.scope.get("extensions")
        server_send = extensions.get(ENGINE_SERVER_SEND) if extensions is not None else None
        if server_send is not None:
            server_send.counts = self.counts  # the engine writes its frames past this `send` and counts them
        metrics.websocket_accepted.labels(route).inc()
        self.open = metrics.websocket_open.labels(route)
        self.open.inc()

    def ended(self) -> None:
        if self.open is not None:
            self.open.dec()
