"""MQTT topic names and topic filters (MQTT 3.1.1 and 5.0, section 4.7): validation, matching, an index.

- Levels are separated by `/`; empty levels are levels (`a//b` has three, `/a` starts with an empty one)
  and a topic without `/` is a single level.
- `+` matches exactly one whole level; `#` matches any number of levels, including none, so `a/#` also
  matches `a`. `#` must be the last level and both wildcards must occupy a whole level (`a+`, `a/#/b`
  are invalid filters).
- Wildcards in the first level never match a topic that starts with `$` (`#` does not match `$SYS/x`).

Matching is iterative. `TopicIndex` stores filters in a trie of levels, so a topic is matched against
any number of subscriptions by walking at most a few branches per level instead of scanning them all.
`filter_to_glob` gives the Redis glob that a broker pattern subscription uses: it matches every topic
the filter matches (and possibly more), so the exact MQTT match is done locally afterwards.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Generic, TypeVar

from .exceptions import InvalidSubscription, InvalidSubscriptionMessage, InvalidTopic

if TYPE_CHECKING:
    from .connection import Connection
    from .message import Message

__all__ = [
    "TopicIndex",
    "escape_glob",
    "filter_to_glob",
    "handle_subscription_message",
    "hanlde_subscription_message",
    "matches",
    "subscribe",
    "topic_matches",
    "unsubscribe",
    "validate_filter",
    "validate_topic",
]

SEPARATOR = "/"
SINGLE_LEVEL = "+"
MULTI_LEVEL = "#"
MAX_BYTES = 65535
_GLOB_SPECIAL = frozenset("*?[]\\")

V = TypeVar("V")


def _check_common(text: str, kind: str) -> None:
    if not text:
        raise ValueError(f"a topic {kind} must not be empty")
    if "\x00" in text:
        raise ValueError(f"a topic {kind} must not contain the NUL character")
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError:
        raise ValueError(f"a topic {kind} must be valid UTF-8 (no lone surrogates)") from None
    if size > MAX_BYTES:
        raise ValueError(f"a topic {kind} must not exceed {MAX_BYTES} bytes")


def validate_topic(topic: str, connection: Connection | None = None) -> None:
    """Raise `InvalidTopic` (about `connection`) unless `topic` is a valid topic name (what a message is
    published to)."""
    try:
        _check_common(topic, "name")
    except ValueError as error:
        raise InvalidTopic(str(error), connection=connection) from None
    if SINGLE_LEVEL in topic or MULTI_LEVEL in topic:
        raise InvalidTopic(
            f"topic name {topic!r} must not contain the wildcards '+' or '#'", connection=connection
        )


def validate_filter(topic_filter: str, connection: Connection | None = None) -> None:
    """Raise `InvalidSubscription` (about `connection`) unless `topic_filter` is a valid MQTT topic filter."""
    try:
        _check_common(topic_filter, "filter")
    except ValueError as error:
        raise InvalidSubscription(str(error), connection=connection) from None
    levels = topic_filter.split(SEPARATOR)
    last = len(levels) - 1
    for position, level in enumerate(levels):
        if MULTI_LEVEL in level and (level != MULTI_LEVEL or position != last):
            raise InvalidSubscription(
                f"in {topic_filter!r}, '#' must be the whole last level", connection=connection
            )
        if SINGLE_LEVEL in level and level != SINGLE_LEVEL:
            raise InvalidSubscription(
                f"in {topic_filter!r}, '+' must be a whole level", connection=connection
            )


def topic_matches(topic: str, topic_filter: str) -> bool:
    """Whether the valid topic name `topic` matches the valid filter `topic_filter`."""
    if topic.startswith("$") and topic_filter[:1] in (SINGLE_LEVEL, MULTI_LEVEL):
        return False
    topic_levels = topic.split(SEPARATOR)
    filter_levels = topic_filter.split(SEPARATOR)
    for position, level in enumerate(filter_levels):
        if level == MULTI_LEVEL:
            return True
        if position >= len(topic_levels):
            return False
        if level != SINGLE_LEVEL and level != topic_levels[position]:
            return False
    return len(topic_levels) == len(filter_levels)


def matches(topic: str, patterns: Iterable[str]) -> bool:
    """Whether `topic` matches any of the filters in `patterns`.

    An invalid topic name matches nothing, and an invalid filter (`a/#/c`, `a+`) is matched by nothing:
    validate them with `validate_topic` and `validate_filter` to be told why.
    """
    if not _is_valid(validate_topic, topic):
        return False
    return any(_is_valid(validate_filter, pattern) and topic_matches(topic, pattern) for pattern in patterns)


def _is_valid(validate: Callable[[str], None], text: str) -> bool:
    try:
        validate(text)
    except (InvalidTopic, InvalidSubscription):
        return False
    return True


def escape_glob(text: str) -> str:
    """`text` as a Redis glob that matches exactly `text`."""
    return "".join("\\" + char if char in _GLOB_SPECIAL else char for char in text)


def filter_to_glob(topic_filter: str) -> str:
    """A Redis glob matching every topic that `topic_filter` matches (`a/+/c` -> `a/*/c`, `a/#` -> `a*`)."""
    levels = topic_filter.split(SEPARATOR)
    tail = ""
    if levels[-1] == MULTI_LEVEL:
        levels.pop()
        tail = "*"
    glob = SEPARATOR.join("*" if level == SINGLE_LEVEL else escape_glob(level) for level in levels)
    return glob + tail


class _Node(Generic[V]):
    __slots__ = ("children", "values")

    def __init__(self) -> None:
        self.children: dict[str, _Node[V]] = {}
        self.values: set[V] = set()


class TopicIndex(Generic[V]):
    """Values (connections) indexed by the topic filters they subscribe to."""

    def __init__(self) -> None:
        self._root: _Node[V] = _Node()
        self._filters: dict[str, int] = {}

    def __len__(self) -> int:
        """The number of distinct filters held."""
        return len(self._filters)

    def __contains__(self, topic_filter: object) -> bool:
        return topic_filter in self._filters

    def add(self, topic_filter: str, value: V) -> bool:
        """Index `value` under the valid filter; True when the filter had no value before."""
        node = self._root
        for level in topic_filter.split(SEPARATOR):
            node = node.children.setdefault(level, _Node())
        if value in node.values:
            return False
        node.values.add(value)
        count = self._filters.get(topic_filter, 0)
        self._filters[topic_filter] = count + 1
        return count == 0

    def discard(self, topic_filter: str, value: V) -> bool:
        """Remove `value` from the filter; True when the filter is left without values."""
        path = [self._root]
        levels = topic_filter.split(SEPARATOR)
        for level in levels:
            child = path[-1].children.get(level)
            if child is None:
                return False
            path.append(child)
        if value not in path[-1].values:
            return False
        path[-1].values.discard(value)
        for depth in range(len(levels), 0, -1):
            node = path[depth]
            if node.values or node.children:
                break
            del path[depth - 1].children[levels[depth - 1]]
        remaining = self._filters[topic_filter] - 1
        if remaining:
            self._filters[topic_filter] = remaining
            return False
        del self._filters[topic_filter]
        return True

    def match(self, topic: str) -> set[V]:
        """Every value whose filter matches the valid topic name `topic`."""
        levels = topic.split(SEPARATOR)
        shields_first_level = topic.startswith("$")
        found: set[V] = set()
        stack: list[tuple[_Node[V], int]] = [(self._root, 0)]
        while stack:
            node, depth = stack.pop()
            wildcards = not (shields_first_level and depth == 0)
            if wildcards and (rest := node.children.get(MULTI_LEVEL)) is not None:
                found |= rest.values
            if depth == len(levels):
                found |= node.values
                continue
            if (child := node.children.get(levels[depth])) is not None:
                stack.append((child, depth + 1))
            if wildcards and (any_level := node.children.get(SINGLE_LEVEL)) is not None:
                stack.append((any_level, depth + 1))
        return found


def _subscription_topic(connection: Connection, message: Message, expected_type: str) -> str:
    if message.type != expected_type:
        raise InvalidSubscriptionMessage(
            f"expected a {expected_type!r} message, got {message.type!r}", connection=connection
        )
    if not message.topic:
        raise InvalidSubscriptionMessage(
            f"a {expected_type!r} message needs a 'topic'", connection=connection
        )
    return message.topic


def subscribe(connection: Connection, message: Message) -> Awaitable[None]:
    """Subscribe `connection` to the filter in a `subscribe` message.

    Takes effect whether awaited or not; an invalid message or filter raises at once (see `calls`)."""
    return connection.subscribe(_subscription_topic(connection, message, "subscribe"))


def unsubscribe(connection: Connection, message: Message) -> Awaitable[None]:
    """Unsubscribe `connection` from the filter in an `unsubscribe` message (harmless when absent)."""
    return connection.unsubscribe(_subscription_topic(connection, message, "unsubscribe"))


def handle_subscription_message(connection: Connection, message: Message) -> Awaitable[None]:
    """Apply a `subscribe` or `unsubscribe` message; any other type raises `InvalidSubscriptionMessage`."""
    if message.type == "subscribe":
        return subscribe(connection, message)
    if message.type == "unsubscribe":
        return unsubscribe(connection, message)
    raise InvalidSubscriptionMessage(
        f"{message.type!r} is neither 'subscribe' nor 'unsubscribe'", connection=connection
    )


hanlde_subscription_message = handle_subscription_message
"""The seed library's spelling, kept so that code written against its README runs unchanged."""
