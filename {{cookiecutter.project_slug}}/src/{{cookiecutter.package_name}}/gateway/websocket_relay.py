"""WebSockets relayed as bytes once the handshake is done: the gateway's own uvicorn WebSocket protocol.

The gateway's ASGI app still decides everything about a WebSocket upgrade: the request limits, the path
check, the request id, and the upstream (round-robin over the healthy ones, the next one when one cannot be
reached). It then calls `relay_to_upstream`, which sends the client's upgrade request on with the gateway's
headers and the client's `Sec-WebSocket-Key`, `-Version`, `-Protocol` and `-Extensions`, so that the client
and the app negotiate with each other directly. A refusal (an HTTP status) is relayed as it came; a 101 is
relayed by `websocket.accept`, after which the `websocket.relay` message hands the upstream connection to
the server, which copies bytes both ways from then on, as nginx does. Frames cross unchanged: a client's
frames stay masked, as the app expects of a client, text and binary, ping and pong and close frames reach
the other end as they were sent, and the gateway never compresses nor inflates one (permessage-deflate,
when the app agrees to it, is between the client and the app).

The headers of each direction's frames are read as the bytes pass and their payloads skipped, never copied:
that tells where a frame begins, so that a side that vanishes without a close frame can be replaced by one
(1014 to the client when the upstream connection is lost, 1001 to the upstream when the client's is), that
a client frame over `ws_max_size` is refused (1009) before it is relayed, that an upstream silent for too
long can be pinged, and gives the messages and payload bytes counted in the metrics. A stopping server
closes its relayed clients with 1012 (service restart). Reading stops on a side while the other side's
write buffer is over its high-water mark, so that a slow client holds up its upstream connection (and the
app then deals with a slow client as it does with any), never the gateway's memory.

`RelayProtocol` serves what the gateway's app sends and nothing more: `websocket.accept`, `websocket.close`,
the denial response (`websocket.http.response.*`) and `websocket.relay`; receiving gives `websocket.connect`,
then `websocket.disconnect` once the connection is over. Served by another WebSocket protocol, the scope
lacks the `websocket.relay` extension and the gateway relays frame by frame with `WebSocketProxy` instead.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import enum
import hashlib
import logging
import os
import ssl
import sys
from http import HTTPStatus
from typing import Any, cast
from urllib.parse import unquote, urlsplit

import h11
from starlette import status
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.config import Config
from uvicorn.protocols.utils import ClientDisconnected, get_local_addr, get_remote_addr, is_ssl
from uvicorn.server import ServerState

from ..observability.metrics import FrameCounts
from ..realtime.proxy import FORWARDED_REQUEST_HEADERS, UpstreamUnreachable, forwarding_headers

__all__ = ["RELAY_EXTENSION", "FrameReader", "RelayProtocol", "relay_to_upstream"]

logger = logging.getLogger("uvicorn.error")

RELAY_EXTENSION = "websocket.relay"
WEBSOCKET_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
# What of the client's handshake goes upstream besides the forwarded headers: the WebSocket negotiation.
NEGOTIATION_HEADERS = frozenset(
    {"sec-websocket-key", "sec-websocket-version", "sec-websocket-protocol", "sec-websocket-extensions"}
)
# The upstream's 101 minus what the server answering the client writes itself. Unlike `WebSocketProxy`,
# the extensions the upstream agreed to are relayed: the frames cross unchanged.
UNRELAYED_101_HEADERS = frozenset(
    {
        "connection",
        "content-length",
        "date",
        "sec-websocket-accept",
        "sec-websocket-protocol",
        "server",
        "transfer-encoding",
        "upgrade",
    }
)
MAX_HEAD_BYTES = 64 * 1024
"""The most an upstream's response head, or a refusal's body, may take; and the most of a client's bytes
held while its upstream connection is handed over."""
CLOSE_TIMEOUT = 5.0
"""How long a side has to finish closing once the other side has ended, before it is aborted."""


def accept_key(key: bytes) -> bytes:
    """The `Sec-WebSocket-Accept` answering `Sec-WebSocket-Key: key` (RFC 6455, 4.2.2)."""
    return base64.b64encode(hashlib.sha1(key + WEBSOCKET_GUID).digest())  # noqa: S324 - the protocol's hash


def control_frame(opcode: int, payload: bytes, *, masked: bool) -> bytes:
    """A control frame (at most 125 bytes of payload), masked as a client's must be when `masked`."""
    if not masked:
        return bytes((0x80 | opcode, len(payload))) + payload
    mask = os.urandom(4)
    masked_payload = bytes(byte ^ mask[index % 4] for index, byte in enumerate(payload))
    return bytes((0x80 | opcode, 0x80 | len(payload))) + mask + masked_payload


def close_frame(code: int, reason: str, *, masked: bool) -> bytes:
    return control_frame(0x8, code.to_bytes(2, "big") + reason.encode()[:123], masked=masked)


class FrameReader:
    """Where the frames of one direction begin, read from their headers as the bytes pass.

    Payloads are skipped, never copied nor unmasked. Messages (final data frames) and payload bytes are added
    to `counts` (its `sent` fields for the frames to the client, else its `received` ones), once per chunk.
    A frame longer than `max_length` stops the reading: `feed` returns where its header begins.
    """

    __slots__ = ("_partial", "_skip", "close_seen", "counts", "max_length", "to_client")

    def __init__(self, counts: FrameCounts, *, to_client: bool, max_length: int = sys.maxsize) -> None:
        self.counts = counts
        self.to_client = to_client
        self.max_length = max_length
        self.close_seen = False
        self._skip = 0  # bytes of the current frame still to come
        self._partial = b""  # the start of a frame header split between chunks

    @property
    def between_frames(self) -> bool:
        return not self._skip and not self._partial

    def feed(self, data: bytes) -> int | None:
        """Read the frame headers in `data`; the offset in `data` of a frame over `max_length`, if one starts
        (negative when its header began in an earlier chunk), else None."""
        size = len(data)
        skip = self._skip
        if skip >= size:
            self._skip = skip - size
            return None
        carried = len(self._partial)
        if carried:
            data = self._partial + data
            size = len(data)
            self._partial = b""
        position = skip
        messages = payload = 0
        max_length = self.max_length
        while position < size:
            available = size - position
            second = data[position + 1] if available > 1 else 0
            length = second & 0x7F
            extra = 0 if length < 126 else 2 if length == 126 else 8
            if available < 2 + extra:
                self._partial = data[position:]
                position = size
                break
            if extra:
                length = int.from_bytes(data[position + 2 : position + 2 + extra], "big")
                if length > max_length:
                    self._skip = 0
                    return position - carried
            first = data[position]
            if first & 0x08:  # a control frame: close (0x8), ping or pong
                if first & 0x0F == 0x8:
                    self.close_seen = True
            else:
                payload += length
                messages += first >> 7  # the final frame of a message
            position += 2 + extra + (4 if second & 0x80 else 0) + length
        self._skip = position - size
        counts = self.counts
        if self.to_client:
            counts.sent += messages
            counts.bytes_sent += payload
        else:
            counts.received += messages
            counts.bytes_received += payload
        return None


class _Stage(enum.Enum):
    HANDSHAKE = "handshake"  # the request is in; the app has not answered
    ACCEPTED = "accepted"  # 101 written; the app has yet to relay or close
    CLOSING = "closing"  # the app closed; waiting for the client's close frame
    RELAYING = "relaying"
    DENIED = "denied"  # an HTTP response instead of the upgrade
    OVER = "over"


class UpstreamConnection(asyncio.Protocol):
    """The gateway's connection to an upstream: the upgrade request, its answer, then bytes to the client."""

    def __init__(self, request: h11.Request) -> None:
        self.transport: asyncio.Transport | None = None
        self.http = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_HEAD_BYTES)
        self.request = (self.http.send(request) or b"") + (self.http.send(h11.EndOfMessage()) or b"")
        self.answered: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.body = b""
        self.leftover = b""  # what the upstream sent after its 101, before the relay began
        self.frames = FrameReader(FrameCounts(), to_client=True)
        self.client: RelayProtocol | None = None
        self.client_transport: asyncio.Transport | None = None
        self.lost = False
        self.heard = False  # whether the upstream sent anything since the keepalive last looked

    def header(self, name: bytes) -> bytes | None:
        return next((value for key, value in self.headers if key == name), None)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        client_transport = self.client_transport
        if client_transport is not None:
            self.heard = True
            self.frames.feed(data)
            client_transport.write(data)
        elif self.answered.done():
            self.leftover += data
            if len(self.leftover) > MAX_HEAD_BYTES and self.transport is not None:
                self.transport.pause_reading()
        else:
            self._read_answer(data)

    def eof_received(self) -> bool | None:
        if not self.answered.done():
            self._read_answer(b"")
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if not self.answered.done():
            self.answered.set_exception(
                ConnectionError("the upstream closed the connection during the handshake")
            )
        if self.client is not None:
            self.client.upstream_lost()

    def pause_writing(self) -> None:
        if self.client is not None:
            self.client.pause_reading()

    def resume_writing(self) -> None:
        if self.client is not None:
            self.client.resume_reading()

    def _read_answer(self, data: bytes) -> None:
        try:
            self.http.receive_data(data)
            while not self.answered.done():
                event = self.http.next_event()
                if event is h11.NEED_DATA:
                    return
                if isinstance(event, h11.InformationalResponse) and event.status_code == 101:
                    self.status, self.headers = 101, list(event.headers)
                    self.leftover = self.http.trailing_data[0]
                    self.answered.set_result(None)
                elif isinstance(event, h11.Response):
                    self.status, self.headers = event.status_code, list(event.headers)
                elif isinstance(event, h11.Data):
                    self.body = (self.body + event.data)[:MAX_HEAD_BYTES]
                elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                    if not self.status:
                        raise h11.RemoteProtocolError("closed before answering")
                    self.answered.set_result(None)
        except h11.ProtocolError as error:
            self.answered.set_exception(ConnectionError(f"not a WebSocket server: {error}"))
            if self.transport is not None:
                self.transport.abort()


class RelayProtocol(asyncio.Protocol):
    """A uvicorn WebSocket protocol (`Config(ws=RelayProtocol)`) that hands a connection over to the bytes
    relay once the gateway's app has answered its handshake with the upstream's."""

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        if not config.loaded:
            config.load()
        self.config = config
        self.app = cast(ASGIApp, config.loaded_app)
        self.loop = _loop or asyncio.get_running_loop()
        self.app_state = app_state
        self.connections = server_state.connections
        self.tasks = server_state.tasks
        self.default_headers = server_state.default_headers
        self.transport: asyncio.Transport = cast(asyncio.Transport, None)
        self.http = h11.Connection(h11.SERVER)
        self.scope: Scope | None = None
        self.key = b""
        self.stage = _Stage.HANDSHAKE
        self.connect_received = False
        self.ended: asyncio.Future[Message] = self.loop.create_future()
        self.held = b""  # the client's bytes received before the relay began
        self.frames = FrameReader(FrameCounts(), to_client=False, max_length=config.ws_max_size)
        self.upstream: UpstreamConnection | None = None
        self.upstream_transport: asyncio.Transport | None = None
        self.read_paused = False
        self.deadline: asyncio.TimerHandle | None = None
        self.keepalive: asyncio.TimerHandle | None = None
        self.ping_pending = False

    # The client's transport

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.connections.add(self)  # type: ignore[arg-type]  # uvicorn's union names its own protocols only
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        upstream_transport = self.upstream_transport
        if upstream_transport is not None:
            oversized = self.frames.feed(data)
            if oversized is None:
                upstream_transport.write(data)
            else:
                self._refuse_oversized(data, oversized)
        elif self.scope is None:
            self._handshake(data)
        elif self.stage is _Stage.ACCEPTED:
            self.held += data
            if len(self.held) > MAX_HEAD_BYTES:
                self.pause_reading()
        elif self.stage is _Stage.CLOSING:
            self.frames.feed(data)
            if self.frames.close_seen:
                self.transport.close()

    def eof_received(self) -> bool | None:
        return None  # the transport closes, and connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.connections.discard(self)
        self._end({"type": "websocket.disconnect", "code": status.WS_1006_ABNORMAL_CLOSURE})
        if self.stage is _Stage.RELAYING and self.upstream is not None:
            if (
                not self.frames.close_seen
                and self.frames.between_frames
                and self.upstream_transport is not None
            ):
                self.upstream_transport.write(
                    close_frame(status.WS_1001_GOING_AWAY, "client connection lost", masked=True)
                )
            self._finish()
        elif self.upstream is not None:
            self.upstream.close()
        self.stage = _Stage.OVER
        self._settle()

    def pause_writing(self) -> None:
        if self.upstream_transport is not None and not self.upstream_transport.is_closing():
            self.upstream_transport.pause_reading()

    def resume_writing(self) -> None:
        if self.upstream_transport is not None and not self.upstream_transport.is_closing():
            self.upstream_transport.resume_reading()

    def pause_reading(self) -> None:
        if not self.read_paused and not self.transport.is_closing():
            self.read_paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.read_paused and not self.transport.is_closing():
            self.read_paused = False
            self.transport.resume_reading()

    def shutdown(self) -> None:
        """The server is stopping: a relayed client is told to reconnect (1012, service restart)."""
        if self.stage is _Stage.RELAYING:
            if self.upstream is not None and self.upstream.frames.between_frames:
                self.transport.write(close_frame(status.WS_1012_SERVICE_RESTART, "", masked=False))
            if self.frames.between_frames and self.upstream_transport is not None:
                self.upstream_transport.write(
                    close_frame(status.WS_1001_GOING_AWAY, "gateway stopping", masked=True)
                )
            self._finish()
        elif self.stage is _Stage.ACCEPTED:
            self.transport.write(close_frame(status.WS_1012_SERVICE_RESTART, "", masked=False))
            self.transport.close()
        elif self.stage is _Stage.HANDSHAKE and self.scope is not None:
            self._respond(503, b"The gateway is stopping")
        else:
            self.transport.close()

    # The relay

    def upstream_lost(self) -> None:
        """The upstream's connection is over: the client gets its close frame, or one saying it was lost."""
        upstream = self.upstream
        if self.stage is not _Stage.RELAYING or upstream is None:
            self._settle()
            return
        if (
            not upstream.frames.close_seen
            and upstream.frames.between_frames
            and not self.transport.is_closing()
        ):
            self.transport.write(
                close_frame(status.WS_1014_BAD_GATEWAY, "upstream connection lost", masked=False)
            )
        self._finish()

    def _refuse_oversized(self, data: bytes, offset: int) -> None:
        """A client frame over `ws_max_size`: 1009 to the client, as uvicorn closes one, and the upstream told
        the client went away, with the bytes before that frame relayed."""
        if offset > 0 and self.upstream_transport is not None:
            self.upstream_transport.write(data[:offset])
        if offset >= 0 and self.upstream_transport is not None:
            self.upstream_transport.write(
                close_frame(status.WS_1001_GOING_AWAY, "message too big", masked=True)
            )
        if self.upstream is not None and self.upstream.frames.between_frames:
            reason = f"Message exceeds the maximum size ({self.config.ws_max_size} bytes)"
            self.transport.write(close_frame(status.WS_1009_MESSAGE_TOO_BIG, reason, masked=False))
        self._finish()

    def _start_relay(self, upstream: UpstreamConnection, counts: FrameCounts) -> None:
        self.stage = _Stage.RELAYING
        self.upstream = upstream
        upstream.client = self
        self.frames.counts = upstream.frames.counts = counts
        if upstream.leftover:
            upstream.frames.feed(upstream.leftover)
            self.transport.write(upstream.leftover)
            upstream.leftover = b""
        if upstream.lost or upstream.transport is None:
            self.upstream_lost()
            return
        upstream.client_transport = self.transport
        self.upstream_transport = upstream.transport
        if self.held:
            held, self.held = self.held, b""
            self.data_received(held)
        upstream.transport.resume_reading()
        self.resume_reading()
        if self.config.ws_ping_interval:
            self.keepalive = self.loop.call_later(self.config.ws_ping_interval, self._check_upstream)

    def _check_upstream(self) -> None:
        """Ping an upstream that sent nothing for `ws_ping_interval`; one still silent `ws_ping_timeout` later
        is gone (its host vanished without a reset), and its client is told so with 1014.

        The app pings each client through the relay, so a live upstream is seldom silent that long. Its pong
        to the gateway's ping reaches the client too, as an unsolicited pong, which clients ignore."""
        upstream, interval = self.upstream, self.config.ws_ping_interval
        if self.stage is not _Stage.RELAYING or upstream is None or self.upstream_transport is None:
            return
        if not interval:
            return
        if upstream.heard:
            upstream.heard = self.ping_pending = False
        elif self.ping_pending:
            if upstream.frames.between_frames:
                self.transport.write(
                    close_frame(status.WS_1014_BAD_GATEWAY, "upstream timed out", masked=False)
                )
            self._finish()
            return
        elif self.frames.between_frames:
            self.upstream_transport.write(control_frame(0x9, b"gateway", masked=True))
            self.ping_pending = True
            interval = self.config.ws_ping_timeout or interval
        self.keepalive = self.loop.call_later(interval, self._check_upstream)

    def _finish(self) -> None:
        """Close both sides once what each was sent is written, and abort whichever is not closed in time."""
        self.upstream_transport = None
        if self.keepalive is not None:
            self.keepalive.cancel()
            self.keepalive = None
        if self.upstream is not None:
            self.upstream.client_transport = None
            self.upstream.close()
        self.transport.close()
        if self.deadline is None:
            self.deadline = self.loop.call_later(CLOSE_TIMEOUT, self._abort)

    def _settle(self) -> None:
        """Once both sides are closed, the deadline for closing them is dropped."""
        over = self.stage is _Stage.OVER and (self.upstream is None or self.upstream.lost)
        if over and self.deadline is not None:
            self.deadline.cancel()
            self.deadline = None

    def _abort(self) -> None:
        self.transport.abort()
        if self.upstream is not None and self.upstream.transport is not None:
            self.upstream.transport.abort()

    # The handshake and the ASGI app

    def _handshake(self, data: bytes) -> None:
        event: object = None
        end: object = None
        try:
            self.http.receive_data(data)
            event, end = self.http.next_event(), self.http.next_event()
        except h11.RemoteProtocolError:
            pass  # closed below
        if not isinstance(event, h11.Request) or not isinstance(end, h11.EndOfMessage):
            self.transport.close()  # uvicorn hands over a whole request head, checked, without a body
            return
        target = event.target.decode("latin-1")
        raw_path, _, query = target.partition("?")
        headers = [(name.lower(), value) for name, value in event.headers]
        offered = b",".join(value for name, value in headers if name == b"sec-websocket-protocol")
        root_path = self.config.root_path
        self.scope = {
            "type": "websocket",
            "asgi": {"version": self.config.asgi_version, "spec_version": "2.4"},
            "http_version": "1.1",
            "scheme": "wss" if is_ssl(self.transport) else "ws",
            "server": get_local_addr(self.transport),
            "client": get_remote_addr(self.transport),
            "root_path": root_path,
            "path": root_path + unquote(raw_path),
            "raw_path": root_path.encode("ascii") + raw_path.encode("latin-1"),
            "query_string": query.encode("latin-1"),
            "headers": headers,
            "subprotocols": [name.strip() for name in offered.decode("latin-1").split(",") if name.strip()],
            "state": self.app_state.copy(),
            "extensions": {"websocket.http.response": {}, RELAY_EXTENSION: {}},
        }
        key = dict(headers).get(b"sec-websocket-key", b"")
        if dict(headers).get(b"sec-websocket-version") != b"13" or len(_b64decode(key)) != 16:
            self._respond(400, b"Invalid WebSocket handshake: Sec-WebSocket-Key and -Version 13 are required")
            return
        self.key = key
        task = self.loop.create_task(self._run_asgi())
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _run_asgi(self) -> None:
        assert self.scope is not None
        try:
            await self.app(self.scope, self.receive, self.send)
        except ClientDisconnected:
            pass
        except BaseException:
            logger.exception("Exception in ASGI application\n")
            if self.stage is _Stage.HANDSHAKE:
                self._respond(500, b"Internal Server Error")
            elif self.stage is not _Stage.RELAYING:
                self.transport.close()
            raise
        if self.stage is _Stage.HANDSHAKE:
            logger.error("ASGI callable returned without completing handshake.")
            self._respond(500, b"Internal Server Error")
        elif self.stage is _Stage.ACCEPTED:
            self.transport.close()

    async def receive(self) -> Message:
        if not self.connect_received:
            self.connect_received = True
            return {"type": "websocket.connect"}
        return await asyncio.shield(self.ended)

    async def send(self, message: Message) -> None:
        kind = message["type"]
        if self.stage is _Stage.OVER or (self.transport.is_closing() and self.stage is not _Stage.RELAYING):
            raise ClientDisconnected
        if self.stage is _Stage.HANDSHAKE:
            if kind == "websocket.accept":
                self._accept(message)
            elif kind == "websocket.close":
                self._respond(403, b"")
            elif kind == "websocket.http.response.start":
                self._log(str(message["status"]))
                self.stage = _Stage.DENIED
                headers = list(message.get("headers", []))
                self._write(
                    h11.Response(
                        status_code=message["status"], headers=headers, reason=_phrase(message["status"])
                    )
                )
            else:
                raise RuntimeError(
                    f"Expected 'websocket.accept', 'websocket.close' or a denial, got {kind!r}"
                )
        elif self.stage is _Stage.DENIED and kind == "websocket.http.response.body":
            self._write(h11.Data(data=message.get("body", b"")))
            if not message.get("more_body", False):
                self._write(h11.EndOfMessage())
                self._end({"type": "websocket.disconnect", "code": status.WS_1006_ABNORMAL_CLOSURE})
                self.transport.close()
        elif self.stage is _Stage.ACCEPTED and kind == "websocket.relay":
            self._start_relay(message["upstream"], message.get("counts") or FrameCounts())
        elif self.stage is _Stage.ACCEPTED and kind == "websocket.close":
            code, reason = message.get("code", status.WS_1000_NORMAL_CLOSURE), message.get("reason") or ""
            self.transport.write(close_frame(code, reason, masked=False))
            self.stage = _Stage.CLOSING
            self._end({"type": "websocket.disconnect", "code": code, "reason": reason})
            self.resume_reading()
            self.deadline = self.loop.call_later(CLOSE_TIMEOUT, self.transport.close)
        else:
            raise RuntimeError(f"Unexpected ASGI message {kind!r} while {self.stage.value}")

    def _accept(self, message: Message) -> None:
        self._log("[accepted]")
        headers = [
            (b"Upgrade", b"websocket"),
            (b"Connection", b"Upgrade"),
            (b"Sec-WebSocket-Accept", accept_key(self.key)),
        ]
        subprotocol = message.get("subprotocol")
        if subprotocol:
            headers.append((b"Sec-WebSocket-Protocol", subprotocol.encode()))
        headers += self.default_headers
        headers += message.get("headers", [])
        self._write(
            h11.InformationalResponse(status_code=101, headers=headers, reason=b"Switching Protocols")
        )
        self.stage = _Stage.ACCEPTED

    def _respond(self, status_code: int, body: bytes) -> None:
        """An HTTP response instead of the upgrade, then the connection closed."""
        self._log(str(status_code))
        headers = [
            *self.default_headers,
            (b"content-type", b"text/plain; charset=utf-8"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ]
        with contextlib.suppress(h11.LocalProtocolError):  # one was under way: the connection just closes
            self._write(h11.Response(status_code=status_code, headers=headers, reason=_phrase(status_code)))
            self._write(h11.Data(data=body))
            self._write(h11.EndOfMessage())
        self.stage = _Stage.DENIED
        self._end({"type": "websocket.disconnect", "code": status.WS_1006_ABNORMAL_CLOSURE})
        self.transport.close()

    def _write(self, event: h11.Event) -> None:
        self.transport.write(self.http.send(event) or b"")

    def _end(self, message: Message) -> None:
        if not self.ended.done():
            self.ended.set_result(message)

    def _log(self, outcome: str) -> None:
        scope = self.scope or {}
        client = scope.get("client")
        where = f"{client[0]}:{client[1]}" if client else ""
        path = scope.get("raw_path", b"").decode("latin-1")
        if scope.get("query_string"):
            path += "?" + scope["query_string"].decode("latin-1")
        logger.info('%s - "WebSocket %s" %s', where, path.replace('"', "%22"), outcome)


def _phrase(status_code: int) -> bytes:
    try:
        return HTTPStatus(status_code).phrase.encode()
    except ValueError:
        return b""


def _b64decode(value: bytes) -> bytes:
    try:
        return base64.b64decode(value, validate=True)
    except ValueError:
        return b""


async def relay_to_upstream(
    scope: Scope, receive: Receive, send: Send, url: str, *, open_timeout: float
) -> None:
    """Relay the client of `scope` to the WebSocket server at `url` (with the client's query string), until
    both sides are closed.

    Raises `UpstreamUnreachable`, with the client unanswered, when the upstream cannot be reached or does not
    answer like a WebSocket server within `open_timeout`. A refusal is relayed with its status and body.
    """
    upstream = await _open(url, scope, open_timeout)
    handed_over = False
    try:
        if upstream.status != 101:
            await _relay_refusal(send, upstream)
            return
        relayed = [
            (name, value)
            for name, value in upstream.headers
            if name.decode("latin-1").lower() not in UNRELAYED_101_HEADERS
        ]
        subprotocol = upstream.header(b"sec-websocket-protocol")
        await send(
            {
                "type": "websocket.accept",
                "subprotocol": subprotocol.decode("latin-1") if subprotocol else None,
                "headers": relayed,
            }
        )
        await send({"type": "websocket.relay", "upstream": upstream})
        handed_over = True
        while (await receive())["type"] != "websocket.disconnect":
            pass
    finally:
        if not handed_over:
            upstream.close()


async def _relay_refusal(send: Send, upstream: UpstreamConnection) -> None:
    content_type = upstream.header(b"content-type") or b"text/plain; charset=utf-8"
    headers = [(b"content-type", content_type), (b"content-length", str(len(upstream.body)).encode())]
    await send({"type": "websocket.http.response.start", "status": upstream.status, "headers": headers})
    await send({"type": "websocket.http.response.body", "body": upstream.body})


async def _open(url: str, scope: Scope, open_timeout: float) -> UpstreamConnection:
    parts = urlsplit(url)
    secure = parts.scheme == "wss"
    host = parts.hostname or ""
    port = parts.port or (443 if secure else 80)
    target = parts.path or "/"
    if scope.get("query_string"):
        target += "?" + scope["query_string"].decode("latin-1")
    request = _upgrade_request(scope, target, parts.netloc)
    loop = asyncio.get_running_loop()
    location = f"{parts.scheme}://{parts.netloc}{parts.path}"  # never the query: it may carry a token
    upstream: UpstreamConnection | None = None
    try:
        async with asyncio.timeout(open_timeout):
            _transport, upstream = await loop.create_connection(
                lambda: UpstreamConnection(request),
                host,
                port,
                ssl=ssl.create_default_context() if secure else None,
            )
            await upstream.answered
    except (OSError, TimeoutError) as error:
        if upstream is not None:
            upstream.close()
        raise UpstreamUnreachable(f"{location}: {error or type(error).__name__}") from error
    except BaseException:
        if upstream is not None:
            upstream.close()
        raise
    if upstream.status == 101:
        expected = accept_key(dict(scope["headers"]).get(b"sec-websocket-key", b""))
        if upstream.header(b"sec-websocket-accept") != expected:
            upstream.close()
            raise UpstreamUnreachable(f"{location}: answered 101 without the WebSocket accept key")
        assert upstream.transport is not None
        upstream.transport.pause_reading()  # until the relay begins; the leftover is bounded meanwhile
    return upstream


def _upgrade_request(scope: Scope, target: str, netloc: str) -> h11.Request:
    connection = HTTPConnection(scope)
    headers = [
        (b"host", connection.headers.get("host", netloc).encode("latin-1")),
        (b"upgrade", b"websocket"),
        (b"connection", b"Upgrade"),
    ]
    relayed = FORWARDED_REQUEST_HEADERS | NEGOTIATION_HEADERS
    headers += [(name, value) for name, value in scope["headers"] if name.decode("latin-1") in relayed]
    headers += [
        (name.encode("latin-1"), value.encode("latin-1")) for name, value in forwarding_headers(connection)
    ]
    return h11.Request(method="GET", target=target, headers=headers)
