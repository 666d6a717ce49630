"""ASGI middleware of the app."""

from __future__ import annotations

from collections.abc import Awaitable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .observability.handshake import HandshakeSend


class InstanceHeaderMiddleware:
    """Name the serving instance in every response, WebSocket handshakes included (`X-Instance`).

    Behind a load balancer this is how operators and tests see where a request or a connection landed.
    The header is added to the response start; a WebSocket's frames go through untouched.
    """

    def __init__(self, app: ASGIApp, instance: str) -> None:
        self.app = app
        self.header = (b"x-instance", instance.encode())

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        # A plain call returning the app's awaitable: no frame of its own under a WebSocket for its life.
        if scope["type"] not in ("http", "websocket"):
            return self.app(scope, receive, send)
        return self.app(scope, receive, HandshakeSend(send, self._name_instance))

    def _name_instance(self, message: Message) -> None:
        message["headers"] = [*message.get("headers", ()), self.header]
