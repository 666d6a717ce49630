"""Hostile frames on the WebSocket endpoints of a real process: random bytes and text, JSON of every shape,
deep nesting, numbers out of range, any Unicode, and the protocol's own types with fields of any type.

Every frame is answered with an `error` frame whose code says what is wrong, in order, or (a valid chat
message) is stored and sent to the room; the connection stays open, nothing fails inside the server, and
a client that sat in the same room (or on the same topic) all along still receives what comes next.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from websockets.sync.client import ClientConnection, connect

from {{ cookiecutter.package_name }}.consumers.chat import ChatMessageCreate

from ..processes import ProcessGroup
from .support import Instance, create_room, start_sqlite_instance

pytestmark = pytest.mark.slow

FRAMES_PER_EXAMPLE = 50
EXAMPLES_PER_ENDPOINT = 100  # 5,000 frames on each endpoint
REPLY_TIMEOUT = 10.0
HANDLER_ERROR_CODES = {"invalid_message", "invalid_topic", "forbidden", "limit_exceeded"}
FIELDS = ["text", "topic", "data", "conn_id", "since"]
TYPES = ["chat.message", "chat.typing", "subscribe", "unsubscribe", "send", "send_by_conn_id", "broadcast"]

Frame = str | bytes
Echo = Callable[[Frame], str | None]

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40)
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=5,
)


def encode(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def nested(depth: int, opening: str, closing: str) -> str:
    return opening * depth + closing * depth


@st.composite
def protocol_lookalikes(draw: st.DrawFn) -> str:
    """An object with a `type` of the protocol (or any other) and its fields holding anything."""
    fields = draw(st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=3))
    return encode({"type": draw(st.sampled_from(TYPES) | st.text(max_size=12)), **fields})


hostile_frames: st.SearchStrategy[Frame] = st.one_of(
    st.binary(max_size=200),
    st.text(max_size=200),
    st.text(st.characters(codec="utf-8"), max_size=200).map(lambda text: encode({"type": text})),
    st.text(st.characters(codec="utf-8"), min_size=1, max_size=200).map(
        lambda text: encode({"type": "chat.message", "text": text})
    ),
    json_values.map(encode),
    protocol_lookalikes(),
    st.integers(min_value=2**64, max_value=10**400).map(str),
    st.sampled_from(["1e400", "-1e999", "NaN", "Infinity", '{"type": "chat.message", "text": 1e999}']),
    st.integers(1, 20_000).map(lambda depth: nested(depth, "[", "]")),
    st.integers(1, 5_000).map(lambda depth: nested(depth, '{"a":', "}").replace("}", "1}", 1)),
    st.integers(1, 2_000).map(
        lambda depth: '{"type": "chat.message", "text": ' + nested(depth, "[", "]") + "}"
    ),
)


def decoded(frame: Frame) -> Any:
    """The frame decoded as the server decodes it (orjson); `ValueError` when it is not JSON."""
    if isinstance(frame, bytes):
        raise ValueError("a binary frame")
    return orjson.loads(frame)


def engine_error(frame: Frame, handled: set[str]) -> str | None:
    """The error code the engine answers with before any handler runs, or None if a handler gets the frame."""
    if isinstance(frame, bytes):
        return "invalid_message"
    try:
        content = decoded(frame)
    except ValueError:
        return "invalid_json"
    if not isinstance(content, dict) or not isinstance(content.get("type"), str):
        return "invalid_message"
    return None if content["type"] in handled else "unknown_type"


def chat_echo(frame: Frame) -> str | None:
    """The text the room sends back for a valid chat message; None for any other frame."""
    try:
        return ChatMessageCreate.model_validate(decoded(frame)).text
    except (ValueError, ValidationError):
        return None


def no_echo(frame: Frame) -> None:
    """No frame of the notifications endpoint is sent back as it is."""


def is_typing(frame: Frame) -> bool:
    """A `chat.typing` frame is valid whatever else it holds, and only the others hear of it."""
    try:
        content = decoded(frame)
    except ValueError:
        return False
    return isinstance(content, dict) and content.get("type") == "chat.typing"


def next_reply(websocket: ClientConnection) -> dict[str, Any]:
    """The next frame that answers the client, skipping presence (which arrives whenever it changes)."""
    while True:
        reply: dict[str, Any] = json.loads(websocket.recv(timeout=REPLY_TIMEOUT))
        if not reply["type"].startswith("presence."):
            return reply


def replies_until_marker(websocket: ClientConnection) -> list[dict[str, Any]]:
    """Send a frame of a unique unknown type, and return the replies that come before the answer to it."""
    marker = f"marker.{secrets.token_hex(8)}"
    websocket.send(encode({"type": marker}))
    replies = []
    while marker not in (reply := next_reply(websocket)).get("detail", ""):
        replies.append(reply)
    return replies


def check_reply(frame: Frame, reply: dict[str, Any], handled: set[str], valid: set[str]) -> None:
    expected = engine_error(frame, handled)
    if expected is not None:
        assert (reply["type"], reply.get("code")) == ("error", expected), (frame, reply)
    elif reply["type"] == "error":
        assert reply["code"] in HANDLER_ERROR_CODES, (frame, reply)
    else:
        assert reply["type"] in valid, (frame, reply)
    if reply["type"] == "error":
        assert isinstance(reply["detail"], str)
        assert reply["detail"]


def volley(
    websocket: ClientConnection, frames: list[Frame], handled: set[str], valid: set[str], echo: Echo
) -> None:
    """Send the frames back to back, then check the answers: one for each frame, in order.

    Echoes of valid chat messages come through the broker, so they may arrive after later answers; they
    are checked apart. The stream is brought in step first, since a failed example leaves replies unread.
    """
    replies_until_marker(websocket)
    for frame in frames:
        websocket.send(frame)
    replies = replies_until_marker(websocket)
    echoes = [reply["text"] for reply in replies if reply["type"] == "chat.message"]
    answers = [reply for reply in replies if reply["type"] != "chat.message"]
    expected_echoes = [text for frame in frames if (text := echo(frame)) is not None]
    while len(echoes) < len(expected_echoes):
        echoes.append(next_reply(websocket)["text"])
    assert sorted(echoes) == sorted(expected_echoes)
    answered = [frame for frame in frames if echo(frame) is None]
    assert len(answers) == len(answered), (answered, answers)
    for frame, reply in zip(answered, answers, strict=True):
        check_reply(frame, reply, handled, valid)


def fuzz(
    websocket: ClientConnection,
    frames: st.SearchStrategy[Frame],
    handled: set[str],
    *,
    valid: set[str],
    echo: Echo,
) -> int:
    """Send `EXAMPLES_PER_ENDPOINT` volleys of hostile frames, each checked by `volley`; the frames sent."""
    sent = 0

    @settings(
        max_examples=EXAMPLES_PER_ENDPOINT,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(st.lists(frames, min_size=FRAMES_PER_EXAMPLE, max_size=FRAMES_PER_EXAMPLE))
    def every_frame_is_answered(volley_frames: list[Frame]) -> None:
        nonlocal sent
        volley(websocket, volley_frames, handled, valid, echo)
        sent += len(volley_frames)

    every_frame_is_answered()
    return sent


def open_socket(url: str, token: str) -> ClientConnection:
    # A bystander reads only at the end: its frames wait in the client instead of filling the server's
    # queue. No keepalive pings: their payload comes from `random`, which Hypothesis sees change mid-draw.
    return connect(
        url,
        additional_headers={"Authorization": f"Bearer {token}"},
        open_timeout=10,
        max_queue=None,
        ping_interval=None,
    )


def receive_until(websocket: ClientConnection, wanted: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    while True:
        frame: dict[str, Any] = json.loads(websocket.recv(timeout=REPLY_TIMEOUT))
        if wanted(frame):
            return frame


def assert_unharmed(instance: Instance) -> None:
    assert instance.server.running
    output = instance.server.output()
    assert "Traceback" not in output, output[-4000:]
    assert httpx.get(instance.base_url + "/readyz", timeout=10).status_code == 200


@pytest.fixture(scope="module")
def instance(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Instance]:
    """One process for the whole fuzz, its frame rate limit lifted so that every frame is handled."""
    directory = tmp_path_factory.mktemp("fuzz")
    with ProcessGroup(directory) as group:
        yield start_sqlite_instance(
            group,
            directory,
            "fuzzed",
            users=["alice", "bob"],
            ws_rate_limit_per_second="1000000",
            ws_rate_limit_burst="1000000",
        )


def test_every_hostile_chat_frame_is_answered_and_the_room_goes_on(instance: Instance) -> None:
    with httpx.Client(base_url=instance.base_url, timeout=10) as http:
        create_room(http, instance.tokens["alice"], "fuzz")
    url = instance.ws("/ws/rooms/fuzz")
    with (
        open_socket(url, instance.tokens["bob"]) as bystander,
        open_socket(url, instance.tokens["alice"]) as fuzzer,
    ):
        frames = hostile_frames.filter(lambda frame: not is_typing(frame))
        sent = fuzz(fuzzer, frames, {"chat.message", "chat.typing"}, valid=set(), echo=chat_echo)

        bystander.send(encode({"type": "chat.message", "text": "still here?"}))
        receive_until(fuzzer, lambda frame: frame.get("text") == "still here?")
        fuzzer.send(encode({"type": "chat.message", "text": "yes"}))
        receive_until(bystander, lambda frame: frame.get("text") == "yes")
    print(f"\n/ws/rooms: {sent} hostile frames, each answered")
    assert sent >= EXAMPLES_PER_ENDPOINT * FRAMES_PER_EXAMPLE
    assert_unharmed(instance)
{%- if cookiecutter.use_notifications == "y" %}


def test_every_hostile_notifications_frame_is_answered_and_the_topics_go_on(instance: Instance) -> None:
    url = instance.ws("/ws/notifications")
    with (
        open_socket(url, instance.tokens["bob"]) as bystander,
        open_socket(url, instance.tokens["alice"]) as fuzzer,
    ):
        bystander.send(encode({"type": "subscribe", "topic": "fuzz/feed"}))
        assert json.loads(bystander.recv(timeout=REPLY_TIMEOUT)) == {
            "type": "subscribed",
            "topic": "fuzz/feed",
        }
        handled = {"subscribe", "unsubscribe", "send"}
        sent = fuzz(fuzzer, hostile_frames, handled, valid={"subscribed", "unsubscribed"}, echo=no_echo)

        with httpx.Client(base_url=instance.base_url, headers=instance.headers("root"), timeout=10) as http:
            for body in ({"topic": "fuzz/feed", "data": 1}, {"username": "alice", "data": 2}):
                assert http.post("/notifications", json=body).status_code == 202
        receive_until(
            bystander, lambda frame: frame == {"type": "notification", "topic": "fuzz/feed", "data": 1}
        )
        receive_until(fuzzer, lambda frame: frame.get("data") == 2)
    print(f"\n/ws/notifications: {sent} hostile frames, each answered")
    assert sent >= EXAMPLES_PER_ENDPOINT * FRAMES_PER_EXAMPLE
    assert_unharmed(instance)
{%- endif %}
