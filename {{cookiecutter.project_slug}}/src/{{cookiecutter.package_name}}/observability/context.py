"""The id of the request or WebSocket connection being served, for every log line written while serving it.

`RequestIdMiddleware` takes the client's `X-Request-ID` when it is a plausible id (so that one id follows a
request through the gateway and the app instance behind it) and makes one up otherwise. It answers with the
id in `X-Request-ID`, handshakes included, and passes it on in the request headers, which the gateway relays
upstream. Tasks started while serving (a connection's writer) inherit it, as asyncio copies the context.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Awaitable
from contextvars import ContextVar

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .handshake import HandshakeSend

REQUEST_ID_HEADER = b"x-request-id"
# Ids of tracing systems and load balancers: UUIDs, hex, base64url; nothing that could forge a log line.
SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")

request_id: ContextVar[str | None] = ContextVar("request_id", default=None)


def incoming_request_id(headers: list[tuple[bytes, bytes]]) -> str | None:
    """The client's `X-Request-ID` if it is a plausible id, else None."""
    for name, value in headers:
        if name == REQUEST_ID_HEADER:
            candidate = value.decode("latin-1")
            return candidate if SANE_REQUEST_ID.fullmatch(candidate) else None
    return None


class RequestIdMiddleware:
    """Give each HTTP request and WebSocket connection an id: in the logging context and in `X-Request-ID`."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        if scope["type"] not in ("http", "websocket"):
            return self.app(scope, receive, send)
        headers: list[tuple[bytes, bytes]] = scope["headers"]
        current = incoming_request_id(headers) or secrets.token_hex(16)
        header = (REQUEST_ID_HEADER, current.encode())
        # In place: a copy of the scope would live as long as the connection (about 2 KB for a WebSocket).
        headers[:] = [*(item for item in headers if item[0] != REQUEST_ID_HEADER), header]

        def answer_with_request_id(message: Message) -> None:
            # An upstream behind the gateway answered with the same id: keep a single header.
            others = [item for item in message.get("headers", ()) if item[0].lower() != REQUEST_ID_HEADER]
            message["headers"] = [*others, header]

        answering = HandshakeSend(send, answer_with_request_id)
        if scope["type"] == "websocket":
            # Servers run a connection in a task of its own, which ends with it: the id is set for that
            # task and not reset, so that no frame of this middleware stays under the socket for its life.
            request_id.set(current)
            return self.app(scope, receive, answering)
        return self._http(scope, receive, answering, current)

    async def _http(self, scope: Scope, receive: Receive, send: Send, current: str) -> None:
        token = request_id.set(current)
        try:
            await self.app(scope, receive, send)
        finally:
            request_id.reset(token)
