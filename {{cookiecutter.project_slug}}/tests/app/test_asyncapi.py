"""The AsyncAPI document: valid AsyncAPI 3.0, complete for every consumer, and readable at `/asyncapi`."""

from __future__ import annotations

import inspect
import json
import re
import typing
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from httpx import AsyncClient
from jsonschema import Draft7Validator
from starlette.routing import WebSocketRoute

from {{ cookiecutter.package_name }}.asyncapi_page import render_page
from {{ cookiecutter.package_name }}.realtime import JsonConsumer
from {{ cookiecutter.package_name }}.realtime.asyncapi import Channel, asyncapi_document
from {{ cookiecutter.package_name }}.realtime.events import collect_event_filters
from {{ cookiecutter.package_name }}.routers import realtime
from {{ cookiecutter.package_name }}.routers.docs import CHANNELS

# The tests of the served document need the app, on any database.
on_sqlite = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)

# The official schema, from the npm package @asyncapi/specs (see tests/data/README.md).
ASYNCAPI_SCHEMA = Path(__file__).resolve().parent.parent / "data" / "asyncapi-3.0.0.schema.json"
CONSUMERS_PACKAGE = "{{ cookiecutter.package_name }}.consumers"


@pytest.fixture
async def document(client: AsyncClient) -> dict[str, Any]:
    response = await client.get("/asyncapi.json")
    assert response.status_code == 200
    served: dict[str, Any] = response.json()
    return served


def resolve(document: dict[str, Any], reference: dict[str, Any]) -> Any:
    """What a reference points to, following references to references."""
    target: Any = reference
    while isinstance(target, dict) and "$ref" in target:
        pointer, target = target["$ref"], document
        for key in pointer.removeprefix("#/").split("/"):
            target = target[key]
    return target


def references(value: Any) -> Iterator[dict[str, Any]]:
    if isinstance(value, dict):
        if isinstance(value.get("$ref"), str):
            yield value
        for item in value.values():
            yield from references(item)
    elif isinstance(value, list):
        for item in value:
            yield from references(item)


def frame_types(document: dict[str, Any], channel: str, action: str) -> set[str]:
    """The `type` values of the frames the document says go one way on a channel (`receive`: from clients)."""
    types: set[str] = set()
    for operation in document["operations"].values():
        if operation["channel"] == {"$ref": f"#/channels/{channel}"} and operation["action"] == action:
            for reference in operation["messages"]:
                payload = resolve(document, resolve(document, reference)["payload"])
                type_schema = payload["properties"]["type"]
                types.update([type_schema["const"]] if "const" in type_schema else type_schema["enum"])
    return types


def consumer_classes() -> list[type[JsonConsumer]]:
    """Every JSON consumer the service defines (the app has imported them all)."""
    found, pending = [], [JsonConsumer]
    while pending:
        for subclass in pending.pop().__subclasses__():
            pending.append(subclass)
            if subclass.__module__.startswith(CONSUMERS_PACKAGE + "."):
                found.append(subclass)
    return found


def engine_names(consumer: type[JsonConsumer]) -> set[str]:
    """Names that are never event methods nor filters: the consumer API of the engine, and typed handlers."""
    return set(dir(JsonConsumer)) | {spec.method for spec in consumer.handler_specs()}


def event_methods(consumer: type[JsonConsumer]) -> list[str]:
    """The methods the engine passes events to, by their type (`chat.typing` -> `chat_typing`): public
    coroutines, other than the engine's names, whose one argument is an event (a mapping)."""
    return [
        name
        for name, method in inspect.getmembers(consumer, inspect.iscoroutinefunction)
        if not name.startswith("_") and name not in engine_names(consumer) and takes_an_event(method)
    ]


def takes_an_event(method: Callable[..., Any]) -> bool:
    parameters = list(inspect.signature(method).parameters)[1:]
    if len(parameters) != 1:
        return False
    annotation = typing.get_type_hints(method).get(parameters[0])
    kind = typing.get_origin(annotation) or annotation
    return isinstance(kind, type) and issubclass(kind, Mapping)


@on_sqlite
def test_the_document_is_valid_asyncapi_3(document: dict[str, Any]) -> None:
    validator = Draft7Validator(json.loads(ASYNCAPI_SCHEMA.read_text()))
    errors = [f"{error.json_path}: {error.message[:300]}" for error in validator.iter_errors(document)]
    assert errors == []
    assert document["asyncapi"] == "3.0.0"


@on_sqlite
def test_every_reference_resolves(document: dict[str, Any]) -> None:
    for reference in references(document):
        assert resolve(document, reference) is not None, reference


@on_sqlite
def test_every_websocket_route_is_a_channel(document: dict[str, Any]) -> None:
    routes = {route.path for route in realtime.router.routes if isinstance(route, WebSocketRoute)}
    assert routes
    assert routes == {channel["address"] for channel in document["channels"].values()}


@on_sqlite
def test_every_frame_type_a_consumer_handles_is_described(document: dict[str, Any]) -> None:
    channels = {channel.consumer: channel.name for channel in CHANNELS}
    consumers = consumer_classes()
    assert consumers, "no consumer was found"
    for consumer in consumers:
        received = {spec.message_type for spec in consumer.handler_specs()}
        filtered = set(collect_event_filters(consumer, engine_names(consumer)))
        methods = event_methods(consumer)
        if not (received or filtered or methods):
            continue  # a base class that serves no endpoint itself
        if consumer not in channels and any(issubclass(served, consumer) for served in channels):
            continue  # a base class: what it handles is checked on the consumers that extend it
        assert consumer in channels, f"{consumer.__name__} handles frames but is not in the document"
        channel = channels[consumer]
        assert received - frame_types(document, channel, "receive") == set(), consumer.__name__
        sent = frame_types(document, channel, "send")
        assert filtered - sent == set(), f"{consumer.__name__} filters events of types it does not describe"
        undescribed = [name for name in methods if name not in {type_.replace(".", "_") for type_ in sent}]
        assert undescribed == [], (
            f"{consumer.__name__} handles events that no frame it sends describes: {undescribed}; "
            "declare the frame's model in `sends`, or make a helper private"
        )


@on_sqlite
def test_the_examples_are_frames_the_consumers_accept(document: dict[str, Any]) -> None:
    for channel in CHANNELS:
        for spec in channel.consumer.handler_specs():
            operation = document["operations"][f"{channel.name}.receive.{spec.message_type}"]
            message = resolve(document, operation["messages"][0])
            for example in message["examples"]:
                assert spec.model.model_validate(example["payload"]).type == spec.message_type


@on_sqlite
def test_the_security_schemes_are_the_three_ways_to_send_a_token(document: dict[str, Any]) -> None:
    schemes = document["components"]["securitySchemes"]
    assert {(scheme["type"], scheme.get("in"), scheme.get("name")) for scheme in schemes.values()} == {
        ("http", None, None),
        ("httpApiKey", "query", "token"),
        ("httpApiKey", "header", "Sec-WebSocket-Protocol"),
    }
    assert document["servers"]["default"]["security"] == [
        {"$ref": f"#/components/securitySchemes/{name}"} for name in schemes
    ]


@on_sqlite
async def test_the_server_is_the_address_the_client_used(client: AsyncClient) -> None:
    direct = (await client.get("/asyncapi.json")).json()["servers"]["default"]
    assert (direct["protocol"], direct["host"]) == ("ws", "test")
    proxied = await client.get("/asyncapi.json", headers={"X-Forwarded-Host": "chat.example.com"})
    assert proxied.json()["servers"]["default"]["host"] == "chat.example.com"


@on_sqlite
async def test_the_page_shows_every_channel_and_frame(client: AsyncClient, document: dict[str, Any]) -> None:
    response = await client.get("/asyncapi")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    page = response.text
    assert "<script" not in page
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page), "the page loads nothing from elsewhere"
    assert 'href="asyncapi.json"' in page
    for name, channel in document["channels"].items():
        assert f'id="channel-{name}"' in page
        assert channel["address"] in page
        for message_name in channel["messages"]:
            title = document["components"]["messages"][message_name]["title"]
            assert f'id="{name}-{message_name}"' in page
            assert f"<code>{title}</code>" in page


def test_the_page_escapes_what_the_document_says() -> None:
    document = asyncapi_document(
        [Channel("<b>ch", "/ws/<i>", CHANNELS[0].consumer, description="<img src=x onerror=alert(1)>")],
        title='<script>alert("title")</script>',
        version="1 & 2",
        server_url="ws://example.com",
        description="Say `<b>` & mean it",
    )
    page = render_page(document, json_url='x" onmouseover="alert(1)')
    for markup in ("<script>", "<img", "<b>", "<i>", '" onmouseover'):
        assert markup not in page
    assert '<h1>&lt;script&gt;alert("title")&lt;/script&gt;</h1>' in page
    assert "<code>&lt;b&gt;</code> &amp; mean it" in page


def test_the_address_parameters_must_all_be_described() -> None:
    consumer = CHANNELS[0].consumer
    with pytest.raises(ValueError, match="address parameters"):
        asyncapi_document(
            [Channel("rooms", "/ws/rooms/{room}", consumer)], title="t", version="1", server_url="ws://h"
        )
    with pytest.raises(ValueError, match="ws:// or wss://"):
        asyncapi_document([], title="t", version="1", server_url="http://h")
