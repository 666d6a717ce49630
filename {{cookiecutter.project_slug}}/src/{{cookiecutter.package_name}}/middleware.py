"""ASGI middleware of the app."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

RESPONSE_START_MESSAGES = frozenset(
    {"http.response.start", "websocket.accept", "websocket.http.response.start"}
)


class InstanceHeaderMiddleware:
    """Name the serving instance in every response, WebSocket handshakes included (`X-Instance`).

    Behind a load balancer this is how operators and tests see where a request or a connection landed.
    """

    def __init__(self, app: ASGIApp, instance: str) -> None:
        self.app = app
        self.header = (b"x-instance", instance.encode())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return

        async def send_naming_instance(message: Message) -> None:
            if message["type"] in RESPONSE_START_MESSAGES:
                message["headers"] = [*message.get("headers", ()), self.header]
            await send(message)

        await self.app(scope, receive, send_naming_instance)
