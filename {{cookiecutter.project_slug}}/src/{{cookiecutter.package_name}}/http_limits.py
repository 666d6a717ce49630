"""Limits on what an HTTP client can make a server hold, for the app and the gateway alike.

`RequestLimitsMiddleware` answers 431 to a request with more than `HTTP_MAX_HEADERS` headers or more than
`HTTP_MAX_HEADER_BYTES` of them, and 413 to a body over `HTTP_MAX_BODY_BYTES` (at once when its
Content-Length says so, else as soon as the bytes read pass the limit), whatever server runs the app.

The server itself must stop reading where the bytes arrive, which only its protocol can do:
`BoundedH11Protocol` is uvicorn's h11 protocol that answers 431 once the request head passes
`HTTP_MAX_HEADER_BYTES` (h11's incomplete event limit, which `serve` sets) and closes a connection whose
request head has not all arrived within `HTTP_HEADER_TIMEOUT_SECONDS` of its opening or of the previous
response (slowloris).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any

import h11
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

from .settings import get_settings

__all__ = ["BoundedH11Protocol", "RequestLimitsMiddleware", "RequestTooLarge"]


class RequestTooLarge(HTTPException):
    """The body read so far is over the limit: an HTTP error, so that the app's body parsing lets it through
    to its own exception handling (a 413), and whatever else reads the body stops."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"The body is limited to {limit} bytes")


class RequestLimitsMiddleware:
    """431 for too many or too large headers, 413 for a body over `max_body_bytes` (see the module)."""

    def __init__(self, app: ASGIApp, *, max_headers: int, max_header_bytes: int, max_body_bytes: int) -> None:
        self.app = app
        self.max_headers = max_headers
        self.max_header_bytes = max_header_bytes
        self.max_body_bytes = max_body_bytes

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        # A plain call returning the app's awaitable: no frame of its own under a WebSocket for its life.
        if scope["type"] not in ("http", "websocket"):
            return self.app(scope, receive, send)
        headers: list[tuple[bytes, bytes]] = scope["headers"]
        head_bytes = len(scope.get("raw_path") or b"") + len(scope.get("query_string", b""))
        head_bytes += sum(len(name) + len(value) + 4 for name, value in headers)
        if len(headers) > self.max_headers or head_bytes > self.max_header_bytes:
            return self._refuse(scope, receive, send, 431, "Request header fields too large")
        if scope["type"] == "websocket":
            return self.app(scope, receive, send)
        return self._http(scope, receive, send)

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers: list[tuple[bytes, bytes]] = scope["headers"]
        too_large = f"The body is limited to {self.max_body_bytes} bytes"
        declared = dict(headers).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_body_bytes:
            await self._refuse(scope, receive, send, 413, too_large)
            return
        received = 0
        response_started = False

        async def receive_within_limit() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    raise RequestTooLarge(self.max_body_bytes)
            return message

        async def send_noting_start(message: Message) -> None:
            nonlocal response_started
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        try:
            await self.app(scope, receive_within_limit, send_noting_start)
        except RequestTooLarge:
            if response_started:
                raise
            await self._refuse(scope, receive, send, 413, too_large)

    @staticmethod
    async def _refuse(scope: Scope, receive: Receive, send: Send, status_code: int, detail: str) -> None:
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008, "reason": detail})
            return
        await JSONResponse({"detail": detail}, status_code=status_code, headers={"Connection": "close"})(
            scope, receive, send
        )


class BoundedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a 431 for an oversized request head and a deadline for each head."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        settings = get_settings()
        self.header_timeout = settings.http_header_timeout_seconds
        self.max_header_bytes = settings.http_max_header_bytes
        self._head_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._await_head()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_deadline()
        super().connection_lost(exc)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._await_head()

    def send_400_response(self, msg: str) -> None:
        if len(self.conn.trailing_data[0]) <= self.max_header_bytes:
            super().send_400_response(msg)
            return
        headers = [(b"content-type", b"text/plain; charset=utf-8"), (b"connection", b"close")]
        for event in (
            h11.Response(status_code=431, headers=headers, reason=b"Request Header Fields Too Large"),
            h11.Data(data=b"Request header fields too large"),
            h11.EndOfMessage(),
        ):
            self.transport.write(self.conn.send(event) or b"")
        self.transport.close()

    def _await_head(self) -> None:
        self._cancel_deadline()
        self._head_deadline = self.loop.call_later(self.header_timeout, self._head_timed_out)

    def _cancel_deadline(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None

    def _head_timed_out(self) -> None:
        """Close the connection unless a request is being served or it became a WebSocket meanwhile."""
        self._head_deadline = None
        in_flight = self.cycle is not None and not self.cycle.response_complete
        upgraded = self.transport.get_protocol() is not self
        if not (in_flight or upgraded or self.transport.is_closing()):
            self.transport.close()
