"""Errors of the realtime engine, their wire form, and decorators that route exceptions to a handler.

Every error that a client can cause is a `RealtimeError` whose `code` is one of the protocol's error
codes; `error_frame()` turns it into `{"type": "error", "code": ..., "detail": ...}`. The connection stays
open after an error frame unless a close code is documented for the case.

A `BrokerError` is not the client's doing: `BrokerUnavailable` is raised by a send while the broker cannot be
reached (nothing was sent), and a consumer answers the frame that caused it with `unavailable`.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Literal, ParamSpec, TypeVar

if TYPE_CHECKING:
    from .connection import Connection

__all__ = [
    "BrokerError",
    "BrokerUnavailable",
    "ErrorCode",
    "InvalidMessage",
    "InvalidSubscription",
    "InvalidSubscriptionMessage",
    "InvalidTopic",
    "RealtimeError",
    "WebSocketException",
    "ahandle",
    "error_frame",
    "handle",
]

ErrorCode = Literal[
    "invalid_json",
    "invalid_message",
    "unknown_type",
    "invalid_topic",
    "forbidden",
    "rate_limited",
    "too_large",
    "limit_exceeded",
    "internal_error",
    "unavailable",
]

P = ParamSpec("P")
T = TypeVar("T")
R = TypeVar("R")
E = TypeVar("E", bound=BaseException)


def error_frame(code: ErrorCode, detail: str) -> dict[str, Any]:
    return {"type": "error", "code": code, "detail": detail}


class BrokerError(Exception):
    """The broker failed to do what was asked of it."""


class BrokerUnavailable(BrokerError):
    """The broker cannot be reached; what was being sent was not sent. Retrying later may succeed."""


class RealtimeError(Exception):
    """An error answered with an error frame (`code` and `detail`); the connection stays open.

    `message` is the text (also `detail`), and `connection` the connection it concerns: the engine passes it
    whenever it raises one for a connection, so a handler can answer it.
    """

    code: ErrorCode = "invalid_message"

    def __init__(
        self, message: str, *, connection: Connection | None = None, code: ErrorCode | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.connection = connection
        if code is not None:
            self.code = code

    @property
    def detail(self) -> str:
        return self.message

    def frame(self) -> dict[str, Any]:
        return error_frame(self.code, self.message)


# The seed library's name for it; Starlette's `WebSocketException` is another class (it closes the socket).
WebSocketException = RealtimeError


class InvalidMessage(RealtimeError):
    """A client frame that is not valid JSON, not an object, too large, or of an unknown `type`."""


class InvalidSubscription(RealtimeError):
    """A topic filter that breaks the MQTT rules (`+` not a whole level, `#` not last, empty, NUL...)."""

    code: ErrorCode = "invalid_topic"


class InvalidTopic(RealtimeError):
    """A topic name that cannot be published to (empty, contains a wildcard or NUL, too long)."""

    code: ErrorCode = "invalid_topic"


class InvalidSubscriptionMessage(InvalidMessage):
    """A `subscribe`/`unsubscribe` message without a topic, or a message of another type."""


def handle(
    exc: type[E] | tuple[type[E], ...], handler: Callable[[E], R]
) -> Callable[[Callable[P, T]], Callable[P, T | R]]:
    """Decorate a function so that `exc` raised inside it is passed to `handler`, whose result is returned."""

    def decorator(func: Callable[P, T]) -> Callable[P, T | R]:
        @functools.wraps(func)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> T | R:
            try:
                return func(*args, **kwargs)
            except exc as error:
                return handler(error)

        return wrapper

    return decorator


def ahandle(
    exc: type[E] | tuple[type[E], ...], handler: Callable[[E], R | Awaitable[R]]
) -> Callable[[Callable[P, T | Awaitable[T]]], Callable[P, Awaitable[T | R]]]:
    """Like `handle`, for an async handler; the decorated function may be sync or async (a sync handler is
    accepted too). The decorated function becomes a coroutine function."""

    def decorator(func: Callable[P, T | Awaitable[T]]) -> Callable[P, Awaitable[T | R]]:
        @functools.wraps(func)
        async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T | R:
            try:
                result = func(*args, **kwargs)
                if inspect.isawaitable(result):
                    return await result
                return result
            except exc as error:
                handled = handler(error)
                if inspect.isawaitable(handled):
                    return await handled
                return handled

        return wrapper

    return decorator
