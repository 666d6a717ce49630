"""A WebSocket `send` for middlewares that only act on the handshake, so frames cost them nothing.

A middleware that wraps `send` with a coroutine of its own adds a coroutine to every frame a connection
writes for as long as it lives. `HandshakeSend` calls the middleware's hook on the response start (the
handshake's headers) and then hands every message to the server's `send` in a plain call, returning the
server's own awaitable: no coroutine, no await of its own.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.types import Message, Send

RESPONSE_START_MESSAGES = frozenset(
    {"http.response.start", "websocket.accept", "websocket.http.response.start"}
)


class HandshakeSend:
    """`send` calling `on_start(message)` for the response start only; every message goes on as it is."""

    __slots__ = ("_on_start", "_send")

    def __init__(self, send: Send, on_start: Callable[[Message], None]) -> None:
        self._send = send
        self._on_start = on_start

    def __call__(self, message: Message) -> Awaitable[None]:
        if message["type"] in RESPONSE_START_MESSAGES:
            self._on_start(message)
        return self._send(message)
