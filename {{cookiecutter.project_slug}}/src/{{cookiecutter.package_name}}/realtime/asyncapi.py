"""An AsyncAPI 3.0 document of WebSocket endpoints, built from their consumers' declared message models.

    channels = [
        Channel("rooms", "/ws/rooms/{room}", RoomConsumer, parameters={"room": "The room's name."}),
    ]
    document = asyncapi_document(
        channels, title="Chat", version="1.0.0", server_url="ws://localhost:8000", token_url="/auth/token"
    )

Each channel is one WebSocket endpoint. Its messages are the models of the consumer's typed handlers (what
clients send: one `receive` operation per frame type, whose reply lists the handler's `sends`), the
consumer's `sends`, and the `error` frame (what the server sends: one `send` operation). The models' JSON
Schemas go to `components/schemas`, and each message carries an example assembled from the fields'
`examples`. With a `token_url`, the three ways of passing a bearer token that `auth.token_from` accepts
are the server's security schemes. Every channel's query takes the engine's `batch` parameter (see
`connection`): the frames described are then the lines of the text frames the server sends.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, Field
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from .connection import BATCH_PARAMETER
from .consumer import JsonConsumer
from .exceptions import ErrorCode
from .handlers import message_types

__all__ = ["ASYNCAPI_VERSION", "Channel", "ErrorFrame", "asyncapi_document"]

ASYNCAPI_VERSION = "3.0.0"
WEBSOCKET_BINDING_VERSION = "0.1.0"
SCHEMA_REF_TEMPLATE = "#/components/schemas/{model}"
_ADDRESS_PARAMETER = re.compile(r"\{([^{}]+)\}")
_NO_EXAMPLE = object()
BATCH_QUERY_SCHEMA: dict[str, Any] = {
    "type": "integer",
    "enum": [0, 1],
    "default": 0,
    "description": (
        "1: when several events are waiting for this connection, they come in one text frame, one JSON "
        "object a line (newline-delimited JSON), each line one of the frames described here; split each "
        "text frame on newlines. 0 (or absent): one event a frame. Any other value is closed with 1008."
    ),
}


class ErrorFrame(BaseModel):
    """The server could not act on a frame; the connection stays open unless a close code follows."""

    type: Literal["error"] = "error"
    code: ErrorCode = Field(examples=["invalid_message"])
    detail: str = Field(examples=["text: String should have at least 1 character"])


@dataclass(frozen=True, slots=True)
class Channel:
    """A WebSocket endpoint: its id in the document, its address, and the consumer that serves it.

    `parameters` describes each `{name}` of the address; `query` is a model of the query parameters (the
    bearer token's `token` is a security scheme, not one of them). Without `description`, the consumer's
    docstring is used.
    """

    name: str
    address: str
    consumer: type[JsonConsumer]
    description: str | None = None
    parameters: Mapping[str, str] = field(default_factory=dict)
    query: type[BaseModel] | None = None

    def server_messages(self) -> tuple[type[BaseModel], ...]:
        """The models of the frames the server sends here, each once: declared sends, then `error`."""
        replies = [model for spec in self.consumer.handler_specs() for model in spec.sends]
        return tuple(dict.fromkeys([*self.consumer.sends, *replies, ErrorFrame]))

    def client_messages(self) -> tuple[type[BaseModel], ...]:
        """The models of the frames the consumer's typed handlers take, each once."""
        return tuple(dict.fromkeys(spec.model for spec in self.consumer.handler_specs()))


def asyncapi_document(
    channels: Sequence[Channel],
    *,
    title: str,
    version: str,
    server_url: str,
    description: str | None = None,
    token_url: str | None = None,
) -> dict[str, Any]:
    """The AsyncAPI 3.0 document (as JSON-ready data) of `channels`, served at `server_url` (ws:// or wss://)."""
    schemas = _Schemas(channels)
    security_schemes = _security_schemes(token_url) if token_url is not None else {}
    info: dict[str, Any] = {"title": title, "version": version}
    if description:
        info["description"] = description
    components: dict[str, Any] = {"schemas": schemas.schemas, "messages": schemas.messages()}
    if security_schemes:
        components["securitySchemes"] = security_schemes
    return {
        "asyncapi": ASYNCAPI_VERSION,
        "info": info,
        "defaultContentType": "application/json",
        "servers": {"default": _server(server_url, security_schemes)},
        "channels": {channel.name: _channel(channel, schemas) for channel in channels},
        "operations": {
            name: operation
            for channel in channels
            for name, operation in _operations(channel, schemas).items()
        },
        "components": components,
    }


class _Schemas:
    """The JSON Schemas of every model of `channels`, by component name, and the messages they make.

    Client frames are described as they are validated, server frames as they are serialised (a model in
    both roles gets two schemas); a server frame always carries its `type`, even where it has a default.
    """

    def __init__(self, channels: Sequence[Channel]) -> None:
        frames: dict[tuple[type[BaseModel], JsonSchemaMode], None] = {}
        for channel in channels:
            frames.update(dict.fromkeys((model, "validation") for model in channel.client_messages()))
            frames.update(dict.fromkeys((model, "serialization") for model in channel.server_messages()))
        refs, definitions = models_json_schema(list(frames), ref_template=SCHEMA_REF_TEMPLATE)
        self.schemas: dict[str, Any] = definitions.get("$defs", {})
        self.names = {key: _component_name(ref["$ref"]) for key, ref in refs.items()}
        self.frames = list(frames)
        for model in {model for model, mode in self.frames if mode == "serialization"}:
            required = self.schemas[self.server(model)].setdefault("required", [])
            if "type" not in required:
                required.insert(0, "type")

    def client(self, model: type[BaseModel]) -> str:
        """The component name of the schema (and of the message) of a frame clients send."""
        return self.names[model, "validation"]

    def server(self, model: type[BaseModel]) -> str:
        """The component name of the schema (and of the message) of a frame the server sends."""
        return self.names[model, "serialization"]

    def messages(self) -> dict[str, Any]:
        return {self.names[key]: self._message(key[0], self.names[key]) for key in self.frames}

    def _message(self, model: type[BaseModel], name: str) -> dict[str, Any]:
        schema = self.schemas[name]
        message: dict[str, Any] = {
            "name": name,
            "title": " | ".join(message_types(model)),
            "contentType": "application/json",
            "payload": {"$ref": SCHEMA_REF_TEMPLATE.format(model=name)},
        }
        if schema.get("description"):
            message["summary"] = schema["description"]
        example = self.example(schema)
        if example is not None:
            message["examples"] = [{"payload": example}]
        return message

    def example(self, schema: Mapping[str, Any]) -> dict[str, Any] | None:
        """A value of an object schema from its properties' const, examples, enum or default, `type`
        first; None if a required property has none of them."""
        example: dict[str, Any] = {}
        properties: dict[str, Any] = schema.get("properties", {})
        for name, prop in sorted(properties.items(), key=lambda item: item[0] != "type"):
            value = self._property_example(prop)
            if value is not _NO_EXAMPLE:
                example[name] = value
            elif name in schema.get("required", ()):
                return None
        return example

    def _property_example(self, prop: Mapping[str, Any]) -> Any:
        if "const" in prop:
            return prop["const"]
        for key in ("examples", "enum"):
            if prop.get(key):
                return prop[key][0]
        if "default" in prop:
            return prop["default"]
        if "$ref" in prop:
            target = self.schemas[_component_name(prop["$ref"])]
            example = self.example(target) if "properties" in target else None
            return _NO_EXAMPLE if example is None else example
        return _NO_EXAMPLE


def _component_name(ref: str) -> str:
    return ref.rsplit("/", 1)[-1]


def _channel(channel: Channel, schemas: _Schemas) -> dict[str, Any]:
    names = _ADDRESS_PARAMETER.findall(channel.address)
    if set(names) != set(channel.parameters):
        raise ValueError(f"channel {channel.name!r}: describe exactly the address parameters {names}")
    message_names = [
        *map(schemas.client, channel.client_messages()),
        *map(schemas.server, channel.server_messages()),
    ]
    result: dict[str, Any] = {
        "address": channel.address,
        "messages": {name: {"$ref": f"#/components/messages/{name}"} for name in message_names},
    }
    description = channel.description or _docstring(channel.consumer)
    if description:
        result["description"] = description
    if names:
        result["parameters"] = {name: {"description": channel.parameters[name]} for name in names}
    # Inline: the binding takes a schema or a reference, and a `$ref` alone would be both.
    query: dict[str, Any] = (
        channel.query.model_json_schema(ref_template=SCHEMA_REF_TEMPLATE)
        if channel.query is not None
        else {"type": "object"}
    )
    query.setdefault("properties", {})[BATCH_PARAMETER] = BATCH_QUERY_SCHEMA
    binding = {"method": "GET", "query": query, "bindingVersion": WEBSOCKET_BINDING_VERSION}
    result["bindings"] = {"ws": binding}
    return result


def _operations(channel: Channel, schemas: _Schemas) -> dict[str, Any]:
    """One `receive` operation per client frame type, replied to with what its handler sends, and one
    `send` operation with every frame the server sends."""
    channel_ref = {"$ref": f"#/channels/{channel.name}"}

    def refs(names: Iterable[str]) -> list[dict[str, str]]:
        return [{"$ref": f"#/channels/{channel.name}/messages/{name}"} for name in names]

    operations: dict[str, Any] = {}
    for spec in sorted(channel.consumer.handler_specs(), key=lambda spec: spec.message_type):
        operation: dict[str, Any] = {
            "action": "receive",
            "channel": channel_ref,
            "title": spec.message_type,
            "messages": refs([schemas.client(spec.model)]),
        }
        if spec.summary:
            operation["summary"] = spec.summary
        if spec.sends:
            replies = dict.fromkeys(map(schemas.server, spec.sends))
            operation["reply"] = {"channel": channel_ref, "messages": refs(replies)}
        operations[f"{channel.name}.receive.{spec.message_type}"] = operation
    operations[f"{channel.name}.send"] = {
        "action": "send",
        "channel": channel_ref,
        "summary": "Frames the server sends on this connection.",
        "messages": refs(map(schemas.server, channel.server_messages())),
    }
    return operations


def _server(server_url: str, security_schemes: Mapping[str, Any]) -> dict[str, Any]:
    parts = urlsplit(server_url)
    if parts.scheme not in ("ws", "wss") or not parts.netloc:
        raise ValueError(f"server_url must be a ws:// or wss:// URL, not {server_url!r}")
    server: dict[str, Any] = {"host": parts.netloc, "protocol": parts.scheme}
    if parts.path.strip("/"):
        server["pathname"] = parts.path.rstrip("/")
    if security_schemes:
        server["security"] = [{"$ref": f"#/components/securitySchemes/{name}"} for name in security_schemes]
    return server


def _security_schemes(token_url: str) -> dict[str, Any]:
    """The bearer token in each of the places the engine looks for it; any one of them is enough."""
    obtain = f"Get the token from `POST {token_url}` (OAuth2 password flow)."
    return {
        "bearerHeader": {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "JWT",
            "description": f"`Authorization: Bearer <token>` on the handshake request. {obtain}",
        },
        "tokenQuery": {
            "type": "httpApiKey",
            "name": "token",
            "in": "query",
            "description": f"`?token=<token>`, for clients that cannot set headers. {obtain}",
        },
        "bearerSubprotocol": {
            "type": "httpApiKey",
            "name": "Sec-WebSocket-Protocol",
            "in": "header",
            "description": (
                "The two subprotocols `bearer` and `<token>`, as browsers can send them: "
                '`new WebSocket(url, ["bearer", token])`; the server selects `bearer`. ' + obtain
            ),
        },
    }


def _docstring(cls: type) -> str | None:
    """The class's own docstring, not one it inherits."""
    doc = cls.__dict__.get("__doc__")
    return doc.strip() if isinstance(doc, str) and doc.strip() else None
