"""Which group events a consumer takes through one of its methods, and which it filters.

By default an event (from `group_send`, a topic, an id) goes to the client as it is, encoded once for all
recipients. A consumer changes that for an event type in one of two ways:

- an event filter, a plain method marked `@event_filter("chat.message")`, that takes the event (decoded
  once for all recipients: read it, do not change it) and the frame encoded for all of them, and returns
  whether this connection's client gets it. It runs when the frame's turn comes (in the connection's
  writer task, or at once when nothing is queued), so it sees what the calls queued before the frame did
  (`Consumer.queue_call`). It costs no encoding, and is what to use to leave out some recipients;
- an event method named after the type (`chat.typing` -> `chat_typing(event)`), a coroutine that gets its
  own copy of the event and sends what it likes. It runs in the writer task too, but whatever it sends is
  encoded again for each connection: keep it for frames that really differ per recipient.

Names starting with `_`, and those of the consumer's own API, are never event methods. A type with both a
filter and an event method, a filter that is a coroutine, or two filters for one type fail at class creation.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Collection, Mapping
from typing import Any, TypeVar

__all__ = ["collect_event_filters", "event_filter", "event_method"]

_MARK = "__realtime_event_filter__"

F = TypeVar("F", bound=Callable[..., bool])


def event_filter(*event_types: str) -> Callable[[F], F]:
    """Mark a consumer method `(self, event: Mapping[str, Any], frame: str) -> bool` as the filter of these
    event types: the connection's client gets such an event only if it returns True."""
    if not event_types or not all(isinstance(event_type, str) and event_type for event_type in event_types):
        raise TypeError("event_filter needs one or more event types")

    def mark(method: F) -> F:
        if inspect.iscoroutinefunction(method):
            raise TypeError(f"event filter {method.__qualname__} must be a plain method, not a coroutine")
        setattr(method, _MARK, event_types)
        return method

    return mark


def event_method(cls: type, event_type: str, reserved: Collection[str]) -> str | None:
    """The name of the coroutine method of `cls` that takes events of `event_type`, if there is one."""
    name = event_type.replace(".", "_")
    if not name.isidentifier() or name.startswith("_") or name in reserved:
        return None
    return name if inspect.iscoroutinefunction(getattr(cls, name, None)) else None


def collect_event_filters(cls: type, reserved: Collection[str]) -> Mapping[str, str]:
    """The event filters of a consumer class (its own and inherited): method names by event type."""
    filters: dict[str, str] = {}
    for name in dir(cls):
        event_types: Any = getattr(getattr(cls, name, None), _MARK, None)
        for event_type in event_types or ():
            if event_type in filters:
                both = f"{filters[event_type]} and {name}"
                raise TypeError(f"{cls.__name__}: event type {event_type!r} has two filters, {both}")
            if event_method(cls, event_type, reserved) is not None:
                raise TypeError(f"{cls.__name__}: event type {event_type!r} has both a filter and a method")
            filters[event_type] = name
    return filters
