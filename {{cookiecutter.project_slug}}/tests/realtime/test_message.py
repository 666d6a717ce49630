"""Messages of the library protocol, the codec, the broker envelope, and the exception decorators."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any, Literal, get_args

import pytest
from pydantic import BaseModel, Field

from {{ cookiecutter.package_name }} import realtime
from {{ cookiecutter.package_name }}.realtime import (
    ErrorCode,
    InvalidMessage,
    InvalidSubscription,
    InvalidTopic,
    Message,
    WebSocketException,
    ahandle,
    handle,
)
from {{ cookiecutter.package_name }}.realtime.message import Envelope, dumps, encode_frame, frame_type, loads


class Notice(BaseModel):
    type: Literal["notice"] = "notice"
    sent_at: datetime
    body: str = Field(alias="bodyText")


def test_from_client_message_reads_every_field_without_changing_its_input() -> None:
    frame = {"type": "send", "topic": "orders/7", "conn_id": ["a", "b"], "data": {"n": 1}}
    before = copy.deepcopy(frame)
    message = Message.from_client_message(data=frame)
    assert frame == before
    assert message == Message(type="send", topic="orders/7", conn_id=("a", "b"), data={"n": 1})


def test_serialize_returns_a_new_dict_without_empty_fields() -> None:
    message = Message(type="broadcast", data={"n": 1})
    first = message.__serialize__()
    first["type"] = "changed"
    assert message.__serialize__() == {"type": "broadcast", "data": {"n": 1}}
    assert Message(type="send", topic="t", conn_id=("a",)).__serialize__() == {
        "type": "send",
        "topic": "t",
        "conn_id": ["a"],
    }


@pytest.mark.parametrize(
    ("frame", "error", "code"),
    [
        ([1, 2], InvalidMessage, "invalid_message"),
        ("subscribe", InvalidMessage, "invalid_message"),
        ({"topic": "a"}, InvalidMessage, "invalid_message"),
        ({"type": 3}, InvalidMessage, "invalid_message"),
        ({"type": "explode"}, InvalidMessage, "unknown_type"),
        ({"type": "subscribe"}, InvalidMessage, "invalid_message"),
        ({"type": "subscribe", "topic": "a/#/b"}, InvalidSubscription, "invalid_topic"),
        ({"type": "send", "topic": "a/+"}, InvalidTopic, "invalid_topic"),
        ({"type": "send", "topic": 5}, InvalidMessage, "invalid_message"),
        ({"type": "send_by_conn_id"}, InvalidMessage, "invalid_message"),
        ({"type": "send_by_conn_id", "conn_id": [1]}, InvalidMessage, "invalid_message"),
    ],
)
def test_bad_client_messages_raise_with_their_error_code(
    frame: Any, error: type[WebSocketException], code: str
) -> None:
    with pytest.raises(error) as raised:
        Message.from_client_message(data=frame)
    assert raised.value.code == code
    assert raised.value.frame() == {"type": "error", "code": code, "detail": raised.value.detail}


def test_frames_encode_models_by_alias_and_in_json_mode() -> None:
    sent_at = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    notice = Notice(sent_at=sent_at, bodyText="hi")
    assert loads(encode_frame(notice)) == {
        "type": "notice",
        "sent_at": "2024-05-01T12:00:00Z",
        "bodyText": "hi",
    }
    assert loads(dumps({"items": [notice]}))["items"][0]["bodyText"] == "hi"
    assert frame_type(notice) == "notice"
    assert frame_type({"type": 1}) is None
    assert loads(encode_frame(Message(type="notification", topic="t", data=[1]))) == {
        "type": "notification",
        "topic": "t",
        "data": [1],
    }


def test_every_error_code_is_documented_with_the_package() -> None:
    assert realtime.__doc__ is not None
    undocumented = [code for code in get_args(ErrorCode) if f"`{code}`" not in realtime.__doc__]
    assert undocumented == []


def test_invalid_json_raises_value_error() -> None:
    with pytest.raises(ValueError, match=r"."):
        loads("{nope")


def test_an_envelope_carries_its_frame_verbatim() -> None:
    envelope = Envelope(
        kind="group", target="room:1\nx", frame='{"type":"a","text":"line\\nbreak"}', event="a"
    )
    assert Envelope.decode(envelope.encode()) == envelope
    excluding = Envelope(kind="group", target="room", frame="{}", exclude=frozenset({"alice", "bob"}))
    assert Envelope.decode(excluding.encode()) == excluding


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"no separator",
        b"[1]\n{}",
        b'{"kind": 1, "target": "x"}\n{}',
        b'{"kind":"group"}\n{}',
        b"\xff\n",
        b'{"kind":"group","target":"x","exclude":"alice"}\n{}',
        b'{"kind":"group","target":"x","exclude":[1]}\n{}',
    ],
)
def test_anything_else_is_not_an_envelope(data: bytes) -> None:
    with pytest.raises(ValueError, match=r"."):
        Envelope.decode(data)


def test_handle_routes_the_exception_to_its_handler() -> None:
    seen: list[str] = []

    def on_error(error: WebSocketException) -> str:
        seen.append(error.detail)
        return "handled"

    @handle(WebSocketException, on_error)
    def parse(value: int) -> str:
        if value < 0:
            raise InvalidMessage("negative")
        return str(value)

    assert parse(3) == "3"
    assert parse(-1) == "handled"
    assert seen == ["negative"]


async def test_ahandle_routes_the_exception_to_its_async_handler() -> None:
    async def on_error(error: InvalidTopic) -> str:
        return f"handled {error.code}"

    @ahandle(InvalidTopic, on_error)
    async def publish(topic: str) -> str:
        if "+" in topic:
            raise InvalidTopic("wildcard")
        return topic

    assert await publish("a/b") == "a/b"
    assert await publish("a/+") == "handled invalid_topic"
    with pytest.raises(InvalidMessage):
        await ahandle(InvalidTopic, on_error)(_raise_invalid_message)()


async def _raise_invalid_message() -> str:
    raise InvalidMessage("not a topic error")
