"""Messages of the library protocol, the JSON codec, and the envelope a frame travels in through the broker.

The codec is orjson: on a typical chat frame it encodes about fifteen times and decodes about two and a
half times faster than the standard library, and a fan-out pays for encoding once. Pydantic models inside
a frame are encoded as their JSON-mode dump, by alias.

A frame is encoded once by the sender and carried verbatim: an `Envelope` is a small JSON header (what kind
of target, which one) followed by a newline and the encoded frame, so the receiving instances never decode
and re-encode what they only forward.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

import orjson
from pydantic import BaseModel

from .exceptions import InvalidMessage
from .topics import validate_filter, validate_topic

__all__ = ["CLIENT_TYPES", "Envelope", "Frame", "Message", "dumps", "encode_frame", "frame_type", "loads"]

Frame: TypeAlias = Mapping[str, Any] | BaseModel

CLIENT_TYPES = frozenset({"subscribe", "unsubscribe", "broadcast", "send", "send_by_conn_id"})
_TOPIC_FILTER_TYPES = frozenset({"subscribe", "unsubscribe"})


def _encode_default(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json", by_alias=True)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def dumps(value: Any) -> str:
    """`value` as compact JSON text."""
    return orjson.dumps(value, default=_encode_default).decode()


def loads(data: str | bytes) -> Any:
    """Decode JSON text; raises `ValueError` when it is not valid JSON."""
    return orjson.loads(data)


def encode_frame(frame: Frame | Message) -> str:
    """The JSON text a client receives for `frame`."""
    if isinstance(frame, Message):
        return dumps(frame.__serialize__())
    if isinstance(frame, BaseModel):
        return frame.model_dump_json(by_alias=True)
    return dumps(frame)


def frame_type(frame: Frame | Message) -> str | None:
    """The `type` of a frame, if it has a string one."""
    if isinstance(frame, Message):
        return frame.type
    value = getattr(frame, "type", None) if isinstance(frame, BaseModel) else frame.get("type")
    return value if isinstance(value, str) else None


@dataclass(frozen=True, slots=True)
class Message:
    """A message of the library's pub/sub protocol, on the wire `{"type", "topic", "conn_id", "data"}`."""

    type: str
    topic: str | None = None
    conn_id: str | Sequence[str] | None = None
    data: Any = None

    @classmethod
    def from_client_message(cls, *, data: Any) -> Message:
        """Validate a decoded client frame without changing it; raises `InvalidMessage` (or a subclass)."""
        if not isinstance(data, dict):
            raise InvalidMessage("a message must be a JSON object")
        message_type = data.get("type")
        if not isinstance(message_type, str) or not message_type:
            raise InvalidMessage("a message needs a non-empty string 'type'")
        if message_type not in CLIENT_TYPES:
            allowed = ", ".join(sorted(CLIENT_TYPES))
            raise InvalidMessage(
                f"unknown type {message_type!r}; expected one of {allowed}", code="unknown_type"
            )
        topic = data.get("topic")
        if topic is not None and not isinstance(topic, str):
            raise InvalidMessage("'topic' must be a string")
        conn_id = data.get("conn_id")
        if not (
            conn_id is None
            or isinstance(conn_id, str)
            or (isinstance(conn_id, list) and all(isinstance(item, str) for item in conn_id))
        ):
            raise InvalidMessage("'conn_id' must be a string or a list of strings")
        if message_type in _TOPIC_FILTER_TYPES or message_type == "send":
            if topic is None:
                raise InvalidMessage(f"a {message_type!r} message needs a 'topic'")
            if message_type == "send":
                validate_topic(topic)
            else:
                validate_filter(topic)
        if message_type == "send_by_conn_id" and not conn_id:
            raise InvalidMessage("a 'send_by_conn_id' message needs a 'conn_id'")
        return cls(
            type=message_type,
            topic=topic,
            conn_id=tuple(conn_id) if isinstance(conn_id, list) else conn_id,
            data=data.get("data"),
        )

    def __serialize__(self) -> dict[str, Any]:
        """A new dict with the wire form of the message; fields that are None are left out."""
        serialized: dict[str, Any] = {"type": self.type}
        if self.topic is not None:
            serialized["topic"] = self.topic
        if self.conn_id is not None:
            serialized["conn_id"] = self.conn_id if isinstance(self.conn_id, str) else list(self.conn_id)
        if self.data is not None:
            serialized["data"] = self.data
        return serialized


@dataclass(frozen=True, slots=True)
class Envelope:
    """What travels on a broker channel: where the frame goes, which ids it skips, and the frame encoded."""

    kind: str
    target: str
    frame: str
    event: str | None = None
    id: str | None = None
    exclude: frozenset[str] = frozenset()

    def encode(self) -> bytes:
        header: dict[str, Any] = {
            "kind": self.kind,
            "target": self.target,
            "event": self.event,
            "id": self.id,
        }
        if self.exclude:
            header["exclude"] = sorted(self.exclude)
        return orjson.dumps(header) + b"\n" + self.frame.encode()

    @classmethod
    def decode(cls, data: bytes) -> Envelope:
        """Raises `ValueError` on anything that is not an envelope."""
        head, separator, frame = data.partition(b"\n")
        if not separator:
            raise ValueError("no header separator")
        header = orjson.loads(head)
        if not isinstance(header, dict):
            raise ValueError("the header is not an object")
        kind, target, event, message_id = (header.get(key) for key in ("kind", "target", "event", "id"))
        if not isinstance(kind, str) or not isinstance(target, str):
            raise ValueError("the header needs string 'kind' and 'target'")
        if not (event is None or isinstance(event, str)) or not (
            message_id is None or isinstance(message_id, str)
        ):
            raise ValueError("'event' and 'id' must be strings when present")
        exclude = header.get("exclude", [])
        if not isinstance(exclude, list) or not all(isinstance(conn_id, str) for conn_id in exclude):
            raise ValueError("'exclude' must be a list of connection ids")
        return cls(
            kind=kind,
            target=target,
            frame=frame.decode(),
            event=event,
            id=message_id,
            exclude=frozenset(exclude),
        )
