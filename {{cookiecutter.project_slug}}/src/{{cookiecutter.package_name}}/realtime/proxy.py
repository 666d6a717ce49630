"""Relay one client WebSocket to an upstream WebSocket server, frame by frame, in both directions.

    @app.websocket("/ws/{path:path}")
    async def relay(websocket: WebSocket, path: str) -> None:
        async with WebSocketProxy(websocket, f"ws://app:8000/ws/{path}") as proxy:
            await proxy()

Entering the context connects: the upstream connection is opened first, offering the client's subprotocols and
forwarding its query string, credentials (`Authorization`, `Cookie`), `Origin`, `User-Agent`, `X-Request-ID`
and `X-Forwarded-*`; only then is the client accepted, with the subprotocol the upstream chose and the
upstream's handshake headers. An upstream that refuses the handshake with an HTTP status has that status
relayed to the client; one that cannot be reached closes the client with 1014 (bad gateway), and calling the
proxy then returns at once. A caller with other upstreams to try calls `await proxy.connect()` before
entering: it raises `UpstreamUnreachable` and leaves the client unanswered. The upstream connection never
offers compression (permessage-deflate): the hop to the upstream is a private one, where compressing would
only cost CPU at both ends on every frame.

The seed library's form works too: the app accepts the client itself, then calls the proxy, which
connects (without accepting again), relays, and closes both sides when either leaves:

    await websocket.accept()
    ws_proxy = WebSocketProxy(websocket, "ws://app:8000/ws")
    await ws_proxy()

The client is then accepted before the upstream answers, so an upstream that refuses or cannot be reached
closes it with 1014 (bad gateway), and the upstream's subprotocol and headers cannot be relayed.

Calling the proxy relays text and binary frames until either side closes, then closes the other side with
the same code and reason, cancels the other direction and waits for it: no task outlives the call.
Codes that cannot travel in a close frame are translated: a client that vanished closes the upstream with
1001 (going away); an upstream that vanished closes the client with 1014.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from types import TracebackType
from typing import Literal, Self
from urllib.parse import urlsplit

from starlette import status
from starlette.requests import HTTPConnection
from starlette.responses import Response
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState
from websockets.asyncio import client as websocket_client
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.typing import Subprotocol

__all__ = ["UpstreamUnreachable", "WebSocketProxy", "accept_and_close", "forwarding_headers"]

logger = logging.getLogger(__name__)

# `X-Request-ID` too, so that the upstream logs the connection under the id the client (or the gateway) gave.
FORWARDED_REQUEST_HEADERS = frozenset({"authorization", "cookie", "origin", "user-agent", "x-request-id"})
# The upstream's handshake response minus what the server answering the client writes itself.
UNRELAYED_RESPONSE_HEADERS = frozenset(
    {
        "connection",
        "content-length",
        "date",
        "keep-alive",
        "sec-websocket-accept",
        "sec-websocket-extensions",
        "sec-websocket-protocol",
        "sec-websocket-version",
        "server",
        "transfer-encoding",
        "upgrade",
    }
)


def forwarding_headers(connection: HTTPConnection) -> list[tuple[str, str]]:
    """`X-Forwarded-For/Proto/Host` for a request relayed on behalf of `connection`.

    The client's address is appended to any `X-Forwarded-For` chain it arrived with, as each proxy on the
    way does; `Proto` and `Host` describe the request as this server received it.
    """
    chain = [value for name, value in connection.headers.items() if name == "x-forwarded-for"]
    if connection.client is not None:
        chain.append(connection.client.host)
    headers = [("x-forwarded-for", ", ".join(chain))] if chain else []
    headers.append(("x-forwarded-proto", "https" if connection.url.scheme in ("https", "wss") else "http"))
    if "host" in connection.headers:
        headers.append(("x-forwarded-host", connection.headers["host"]))
    return headers


async def accept_and_close(client: WebSocket, code: int, reason: str) -> None:
    """Close a client that cannot be served, in a way that lets it read `code`.

    A refused handshake only ever shows up as 1006 in a browser, so the connection is accepted and closed
    at once. Browsers also fail a handshake that picks none of the subprotocols they offered, hiding the
    code again, so the first one offered is echoed.
    """
    offered = client.scope.get("subprotocols") or []
    await client.accept(subprotocol=offered[0] if offered else None)
    await client.close(code, reason)


class UpstreamUnreachable(ConnectionError):
    """The upstream could not be reached: refused, unresolvable, timed out, or not a WebSocket server."""


@dataclass(frozen=True, slots=True)
class _Closing:
    """How one side ended, as the close to send to the other side."""

    target: Literal["client", "upstream"]
    code: int
    reason: str


class WebSocketProxy:
    """A client WebSocket relayed to `server_endpoint` (a `ws://` or `wss://` URL).

    The client's query string is appended to `server_endpoint`. `open_timeout` bounds the upstream
    handshake; `close_timeout` bounds the wait for the upstream to acknowledge a close.
    """

    def __init__(
        self,
        client: WebSocket,
        server_endpoint: str,
        *,
        open_timeout: float = 10.0,
        close_timeout: float = 5.0,
    ) -> None:
        self.client = client
        self.server_endpoint = server_endpoint
        self.open_timeout = open_timeout
        self.close_timeout = close_timeout
        self._upstream: ClientConnection | None = None
        self._connect_attempted = False

    async def connect(self) -> None:
        """Open the upstream connection, then accept the client the way the upstream accepted this proxy.

        Raises `UpstreamUnreachable`, with the client still unanswered, when the upstream cannot be reached.
        """
        if self._connect_attempted:
            raise RuntimeError("a WebSocketProxy connects once")
        self._connect_attempted = True
        offered = [Subprotocol(name) for name in self.client.scope.get("subprotocols") or []]
        try:
            upstream = await websocket_client.connect(
                self._upstream_url(),
                subprotocols=offered or None,  # an empty list would send an empty, invalid header
                additional_headers=self._request_headers(),
                user_agent_header=None,
                # A loopback or private hop: compressing would cost both ends CPU on every frame to save
                # bandwidth that is not scarce there.
                compression=None,
                open_timeout=self.open_timeout,
                close_timeout=self.close_timeout,
            )
        except InvalidStatus as refusal:
            await self._relay_refusal(refusal)
            return
        except (OSError, TimeoutError, InvalidHandshake) as error:
            raise UpstreamUnreachable(f"{self._upstream_location()}: {error}") from error
        try:
            if not self._client_accepted():
                await self.client.accept(
                    subprotocol=upstream.subprotocol, headers=self._response_headers(upstream)
                )
        except BaseException:
            await upstream.close(status.WS_1001_GOING_AWAY, "client left during the handshake")
            raise
        self._upstream = upstream

    async def __aenter__(self) -> Self:
        if self._connect_attempted:
            return self
        try:
            await self.connect()
        except UpstreamUnreachable as unreachable:
            logger.warning("WebSocket upstream unreachable: %s", unreachable)
            if self._client_accepted():
                await self._close_client(status.WS_1014_BAD_GATEWAY, "upstream unreachable")
            else:
                await accept_and_close(self.client, status.WS_1014_BAD_GATEWAY, "upstream unreachable")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        upstream, self._upstream = self._upstream, None
        if upstream is None:
            return
        if exc is None:
            code, reason = status.WS_1000_NORMAL_CLOSURE, ""
        elif isinstance(exc, asyncio.CancelledError):
            code, reason = status.WS_1001_GOING_AWAY, "proxy shutting down"
        else:
            code, reason = status.WS_1011_INTERNAL_ERROR, "proxy error"
        await self._close_client(code, reason)
        await upstream.close(code, reason)

    async def __call__(self) -> None:
        """Relay frames until one side closes; close the other side the same way.

        Outside `async with`, connect first and close both sides at the end (the seed library's form)."""
        if not self._connect_attempted:
            async with self:
                await self._relay()
            return
        await self._relay()

    def _client_accepted(self) -> bool:
        return self.client.application_state is WebSocketState.CONNECTED

    async def _relay(self) -> None:
        upstream = self._upstream
        if upstream is None:
            return
        relays = (
            asyncio.create_task(self._client_to_upstream(upstream), name="websocket-proxy:client->upstream"),
            asyncio.create_task(self._upstream_to_client(upstream), name="websocket-proxy:upstream->client"),
        )
        try:
            done, _ = await asyncio.wait(relays, return_when=asyncio.FIRST_COMPLETED)
            closing = next(iter(done)).result()
        finally:
            for relay in relays:
                relay.cancel()
            await asyncio.wait(relays)
            for relay in relays:
                if not relay.cancelled():
                    relay.exception()  # retrieved so that a second failure is not reported as unhandled
        if closing.target == "client":
            await self._close_client(closing.code, closing.reason)
        else:
            await upstream.close(closing.code, closing.reason)

    async def _client_to_upstream(self, upstream: ClientConnection) -> _Closing:
        while True:
            message = await self.client.receive()
            if message["type"] == "websocket.disconnect":
                return _client_left(
                    message.get("code", status.WS_1005_NO_STATUS_RCVD), message.get("reason") or ""
                )
            text = message.get("text")
            try:
                await upstream.send(text if text is not None else message.get("bytes") or b"")
            except ConnectionClosed as closed:
                return _upstream_left(closed)

    async def _upstream_to_client(self, upstream: ClientConnection) -> _Closing:
        """The hot path of a fan-out: each frame is passed on as the ASGI message, with no more work."""
        send, recv = self.client.send, upstream.recv
        while True:
            try:
                data = await recv()
            except ConnectionClosed as closed:
                return _upstream_left(closed)
            message = (
                {"type": "websocket.send", "text": data}
                if isinstance(data, str)
                else {"type": "websocket.send", "bytes": data}
            )
            try:
                await send(message)
            except WebSocketDisconnect as disconnect:
                return _client_left(disconnect.code, disconnect.reason)

    async def _close_client(self, code: int, reason: str) -> None:
        connected = WebSocketState.CONNECTED
        if self.client.client_state is not connected or self.client.application_state is not connected:
            return
        with contextlib.suppress(WebSocketDisconnect):  # gone meanwhile: nothing left to tell it
            await self.client.close(code, reason)

    async def _relay_refusal(self, refusal: InvalidStatus) -> None:
        response = refusal.response
        if self._client_accepted():
            await self._close_client(status.WS_1014_BAD_GATEWAY, f"upstream refused: {response.status_code}")
            return
        if "websocket.http.response" not in self.client.scope.get("extensions", {}):
            await self.client.close()  # the server answers 403: the closest it can say
            return
        content_type = response.headers.get("Content-Type", "text/plain; charset=utf-8")
        await self.client.send_denial_response(
            Response(bytes(response.body), status_code=response.status_code, media_type=content_type)
        )

    def _upstream_url(self) -> str:
        query = self.client.scope.get("query_string", b"").decode("latin-1")
        if not query:
            return self.server_endpoint
        separator = "&" if urlsplit(self.server_endpoint).query else "?"
        return f"{self.server_endpoint}{separator}{query}"

    def _upstream_location(self) -> str:
        """The upstream URL without its query string, which may carry a token and must not be logged."""
        parts = urlsplit(self.server_endpoint)
        return f"{parts.scheme}://{parts.netloc}{parts.path}"

    def _request_headers(self) -> list[tuple[str, str]]:
        relayed = [
            (name, value) for name, value in self.client.headers.items() if name in FORWARDED_REQUEST_HEADERS
        ]
        return relayed + forwarding_headers(self.client)

    @staticmethod
    def _response_headers(upstream: ClientConnection) -> list[tuple[bytes, bytes]]:
        if upstream.response is None:
            return []
        return [
            (name.lower().encode("latin-1"), value.encode("latin-1"))
            for name, value in upstream.response.headers.raw_items()
            if name.lower() not in UNRELAYED_RESPONSE_HEADERS
        ]


def _client_left(code: int, reason: str) -> _Closing:
    if code == status.WS_1006_ABNORMAL_CLOSURE:
        return _Closing("upstream", status.WS_1001_GOING_AWAY, "client connection lost")
    if code == status.WS_1005_NO_STATUS_RCVD:
        return _Closing("upstream", status.WS_1000_NORMAL_CLOSURE, "")
    return _Closing("upstream", code, reason)


def _upstream_left(closed: ConnectionClosed) -> _Closing:
    if closed.rcvd is None:
        return _Closing("client", status.WS_1014_BAD_GATEWAY, "upstream connection lost")
    if closed.rcvd.code == status.WS_1005_NO_STATUS_RCVD:
        return _Closing("client", status.WS_1000_NORMAL_CLOSURE, "")
    return _Closing("client", closed.rcvd.code, closed.rcvd.reason)
