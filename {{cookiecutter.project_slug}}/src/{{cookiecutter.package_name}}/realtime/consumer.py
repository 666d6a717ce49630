"""Consumers in the style of Django Channels: one instance per WebSocket, with hooks and groups.

`run()` drives the whole life: `connect()` (accept, or refuse), then one `receive()` per frame, then
`disconnect(code)`; the `groups` of the class are joined on accept and every group is left at the end.
`accept()` returns the `Connection` (then also `connection`, None before). Frames sent are queued and written
in order by the connection's writer task; `queue_call()` runs a coroutine there, after the frames sent before
it and before those sent after it. An error in a hook or handler never ends the connection: a
`RealtimeError` becomes its error frame, a `BrokerError` an `unavailable` one, anything else is logged
and answered with `internal_error`. Starlette's `WebSocketException` (what `reject()` raises) closes the
connection with its code. Frames over the manager's `max_frame_bytes` close it with 1009; frames beyond the
optional `RateLimit` get `rate_limited` and are dropped, and past its `close_after` the client gets 1008.

Events sent to a group (or a topic, or by id) go to the client as they are, encoded once for all recipients,
but those with an id in `group_send(..., exclude=)`, unless the consumer filters their type (`@event_filter`)
or has a method named after it (`chat.typing` -> `chat_typing(event)`): see `events`.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, ClassVar

from pydantic import BaseModel, ValidationError
from starlette import status
from starlette.exceptions import WebSocketException
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from .auth import bearer_subprotocol
from .connection import Connection, EventFilter, EventHandler
from .events import collect_event_filters, event_method
from .exceptions import BrokerError, InvalidMessage, RealtimeError, error_frame
from .handlers import HandlerSpec, collect_handlers, describe_validation_error
from .manager import WebSocketManager
from .message import Frame, Message, frame_type, loads
from .ratelimit import RateLimit, TokenBucket, Verdict
from .recovery import Cursor, HistoryProvider

__all__ = ["Consumer", "JsonConsumer", "RateLimit"]

logger = logging.getLogger(__name__)


class Consumer:
    """One instance per WebSocket; subclass it and override `connect`, `receive`, `disconnect`."""

    groups: ClassVar[Iterable[str]] = ()
    sends: ClassVar[Iterable[type[BaseModel]]] = ()
    rate_limit: RateLimit | None = None
    _handlers: ClassVar[dict[str, HandlerSpec]] = {}
    _reserved: ClassVar[frozenset[str]] = frozenset()
    _event_filters: ClassVar[Mapping[str, str]] = {}
    _event_methods: ClassVar[dict[str, str | None]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # The engine's own API and typed handlers are never event methods; the first class of this module
        # in the MRO is the engine base the consumer extends (for `JsonConsumer` itself, itself).
        engine_base = next(base for base in cls.__mro__ if base.__module__ == __name__)
        cls._reserved = frozenset(dir(engine_base)) | {spec.method for spec in cls._handlers.values()}
        cls._event_filters = collect_event_filters(cls, cls._reserved)
        cls._event_methods = {}

    def __init__(
        self,
        websocket: WebSocket,
        manager: WebSocketManager,
        *,
        conn_id: str | None = None,
        rate_limit: RateLimit | None = None,
    ) -> None:
        self.websocket = websocket
        self.manager = manager
        self.conn_id = conn_id
        self._connection: Connection | None = None
        self._cursors: dict[str, Cursor] = {}  # by event type: those of the recoverable groups joined
        if rate_limit is not None:
            self.rate_limit = rate_limit
        self._bucket = TokenBucket(self.rate_limit) if self.rate_limit is not None else None

    @classmethod
    def as_endpoint(
        cls, manager: WebSocketManager | Callable[[WebSocket], WebSocketManager], **kwargs: Any
    ) -> Callable[[WebSocket], Awaitable[None]]:
        """A WebSocket endpoint running this consumer, for `add_api_websocket_route` or `WebSocketRoute`.

        `manager` may be a callable that finds it per connection (`lambda ws: ws.app.state.manager`);
        `kwargs` go to the constructor.
        """

        async def endpoint(websocket: WebSocket) -> None:
            resolved = manager if isinstance(manager, WebSocketManager) else manager(websocket)
            await cls(websocket, resolved, **kwargs).run()

        endpoint.__name__ = endpoint.__qualname__ = cls.__name__
        endpoint.__doc__ = cls.__doc__
        return endpoint

    async def connect(self) -> None:
        """Called first. Authenticate here, then `accept()`; return without accepting to refuse."""
        await self.accept()

    async def receive(self, text: str | None = None, bytes_data: bytes | None = None) -> None:
        """Called for each frame from the client."""

    async def disconnect(self, code: int) -> None:
        """Called once the connection is over, before its groups and presence are left."""

    @property
    def connection(self) -> Connection | None:
        """The connection once `accept()` has accepted it (and after it closed); None before."""
        return self._connection

    async def accept(
        self, subprotocol: str | None = None, headers: Iterable[tuple[bytes, bytes]] = ()
    ) -> Connection:
        """Accept the client (selecting `bearer` if it offered it), join `groups`, start receiving events."""
        if self._connection is not None:
            return self._connection
        connection = self.manager.create_connection(self.websocket, self.conn_id)
        connection.event_handler = self._event_handler
        connection.event_filter = self._event_filter
        connection.consumer_name = type(self).__name__
        await connection.accept(subprotocol or bearer_subprotocol(self.websocket), headers)
        self._connection = connection
        await self.manager.add_connection(connection)
        for group in self.groups:
            await self.manager.group_add(group, connection)
        return connection

    async def close(self, code: int = status.WS_1000_NORMAL_CLOSURE, reason: str = "") -> None:
        """Close once the frames already sent are written; before `accept()`, refuse the handshake."""
        if self.connection is not None:
            await self.connection.close(code, reason)
        elif self.websocket.application_state is not WebSocketState.DISCONNECTED:
            await self.websocket.close(code, reason)

    async def send(self, text: str | None = None, bytes_data: bytes | None = None) -> None:
        connection = self._connected()
        if text is not None:
            await connection.send_text(text)
        if bytes_data is not None:
            await connection.send_bytes(bytes_data)

    async def send_json(self, content: Frame | Message) -> None:
        await self._connected().send_json(content)

    async def send_error(self, error: RealtimeError) -> None:
        await self.send_json(error.frame())

    def queue_call(self, call: Callable[[], Awaitable[None]]) -> None:
        """Run `call` in the connection's writer task once the frames sent before are written; the frames
        sent (and events received) meanwhile wait until it returns, and what it sends is written at once.
        If it raises, the client gets an error frame. Nothing runs if the connection is closing."""
        self._connected().deliver(call)

    async def group_add(self, group: str) -> None:
        await self.manager.group_add(group, self._connected())

    async def join_recoverable(
        self, group: str, history: HistoryProvider, *, event_type: str, since: int | None = None
    ) -> None:
        """Join `group` and get each of its `event_type` events (which carry a `seq`) once, in seq order,
        with the stored ones after `since` first and any missed live read from `history` (see `recovery`).
        One recoverable group per event type, and one event type per recoverable group (`ValueError`)."""
        if event_type in self._cursors:
            raise ValueError(f"{type(self).__name__} already has a recoverable group of {event_type!r}")
        connection = self._connected()
        if since is None:  # from the head before the join: what is stored after it comes, live or replayed
            since = await self.manager.recovery.head(group, history)
        cursor = self.manager.recovery.cursor(connection, group, history, event_type)
        self._cursors[event_type] = cursor
        joined = asyncio.Event()
        self.queue_call(functools.partial(cursor.start, since, joined))  # live events wait behind it
        try:
            await self.group_add(group)
        finally:
            joined.set()

    async def group_discard(self, group: str) -> None:
        await self.manager.group_discard(group, self._connected())

    async def subscribe(self, topic_filter: str) -> None:
        """Receive what is sent to the topics this MQTT filter matches; `InvalidSubscription` if invalid."""
        await self._connected().subscribe(topic_filter)

    async def unsubscribe(self, topic_filter: str) -> None:
        await self._connected().unsubscribe(topic_filter)

    async def group_send(self, group: str, event: Frame, *, exclude: str | Iterable[str] = ()) -> None:
        """Send `event` to the members of `group` on every instance, but those with an id in `exclude`
        (a recoverable group's sequenced events reach all its members: see `recovery`).

        An event of a recoverable group that cannot be published (the broker is down) is not an error: it
        is stored, so the group's members here are healed from its history at once, and elsewhere by the
        next check of their instance."""
        try:
            await self.manager.group_send(group, event, exclude=exclude)
        except BrokerError as error:
            cursor = self._cursors.get(frame_type(event) or "")
            if cursor is None or cursor.group != group or not self.manager.recovery.heal_group(group):
                raise
            logger.warning("could not publish to %r, healing from its history: %s", group, error)

    async def run(self) -> None:
        """The whole life of the connection; returns when it is over."""
        code = status.WS_1000_NORMAL_CLOSURE
        try:
            await self.connect()
            if self.connection is None:
                await self.close()
                return
            code = await self._receive_until_closed(self.connection)
        except WebSocketException as refusal:
            code = refusal.code
            await self.close(refusal.code, refusal.reason or "")
        except RealtimeError as error:
            if self.connection is not None:
                await self.send_error(error)
            code = status.WS_1008_POLICY_VIOLATION
            await self.close(code, error.code)
        except Exception:
            logger.exception("%s failed; closing with 1011", type(self).__name__)
            code = status.WS_1011_INTERNAL_ERROR
            await self.close(code)
        finally:
            if self.connection is not None:
                await self._end(self.connection, code)

    async def _receive_until_closed(self, connection: Connection) -> int:
        while True:
            try:
                frame = await connection.receive_frame()
            except WebSocketDisconnect as disconnect:
                return disconnect.code
            except InvalidMessage as too_large:
                await self.send_error(too_large)
                await self.close(status.WS_1009_MESSAGE_TOO_BIG)
                return status.WS_1009_MESSAGE_TOO_BIG
            verdict = self._bucket.take() if self._bucket is not None else Verdict.ALLOWED
            if verdict is Verdict.EXCEEDED:
                await self.send_json(error_frame("rate_limited", "still too many frames; closing"))
                await self.close(status.WS_1008_POLICY_VIOLATION, "Rate limit exceeded")
                return status.WS_1008_POLICY_VIOLATION
            if verdict is Verdict.REFUSED:
                await self.send_json(error_frame("rate_limited", "too many frames; this one was dropped"))
                continue
            try:
                if isinstance(frame, str):
                    await self.receive(text=frame)
                else:
                    await self.receive(bytes_data=frame)
            except WebSocketException:
                raise
            except Exception as error:  # noqa: BLE001 - `report` answers it, and logs what is unexpected
                await self.report(error)

    async def report(self, error: Exception) -> None:
        """Answer the client for a frame its handler could not handle: a `RealtimeError` with its error
        frame, a `BrokerError` with `unavailable`, anything else with `internal_error`, logged. The receive
        loop calls it; so may work that a handler left to another task and that failed after it returned."""
        if isinstance(error, RealtimeError):
            await self.send_error(error)
        elif isinstance(error, BrokerError):
            logger.warning("%s could not handle a frame: %s", type(self).__name__, error)
            await self.send_json(error_frame("unavailable", "messages cannot be sent now; try again"))
        else:
            logger.error("%s could not handle a frame", type(self).__name__, exc_info=error)
            self.manager.stats.handler_errors += 1
            await self.send_json(error_frame("internal_error", "the server could not handle this frame"))

    async def _end(self, connection: Connection, code: int) -> None:
        for cursor in self._cursors.values():
            cursor.close()
        try:
            await self.disconnect(code)
        except Exception:
            logger.exception("%s.disconnect failed", type(self).__name__)
        await self.manager.remove_connection(connection)

    def _connected(self) -> Connection:
        if self._connection is None:
            raise RuntimeError("the consumer has not accepted its connection yet")
        return self._connection

    def _event_handler(self, event_type: str) -> EventHandler | None:
        cls = type(self)
        if event_type not in cls._event_methods:
            cls._event_methods[event_type] = event_method(cls, event_type, cls._reserved)
        name = cls._event_methods[event_type]
        return getattr(self, name) if name is not None else None

    def _event_filter(self, event_type: str) -> EventFilter | None:
        name = self._event_filters.get(event_type)
        return getattr(self, name) if name is not None else None


class JsonConsumer(Consumer):
    """A consumer of JSON text frames, routed by `type` to typed handlers (see `handler`)."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        cls._handlers = collect_handlers(cls)
        super().__init_subclass__(**kwargs)

    @classmethod
    def handler_specs(cls) -> list[HandlerSpec]:
        """The typed handlers, for documentation (AsyncAPI)."""
        return list(cls._handlers.values())

    async def receive(self, text: str | None = None, bytes_data: bytes | None = None) -> None:
        if text is None:
            raise InvalidMessage("binary frames are not accepted; send JSON as text")
        try:
            content = loads(text)
        except ValueError as error:
            raise InvalidMessage(f"not valid JSON: {error}", code="invalid_json") from None
        await self.receive_json(content)

    async def receive_json(self, content: Any) -> None:
        """Called with each decoded frame; by default, validates it and calls its typed handler."""
        if not isinstance(content, dict):
            raise InvalidMessage("a frame must be a JSON object")
        message_type = content.get("type")
        if not isinstance(message_type, str):
            raise InvalidMessage("a frame needs a string 'type'")
        spec = self._handlers.get(message_type)
        if spec is None:
            known = ", ".join(sorted(self._handlers)) or "none"
            raise InvalidMessage(
                f"unknown type {message_type!r}; this endpoint takes {known}", code="unknown_type"
            )
        try:
            message = spec.model.model_validate(content)
        except ValidationError as error:
            raise InvalidMessage(describe_validation_error(error)) from None
        reply = await getattr(self, spec.method)(message)
        if reply is not None:
            await self.send_json(reply)
