"""The WebSocket protocol's documentation: the AsyncAPI document, and a page made from it for people."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel, Field
from pydantic.json_schema import SkipJsonSchema

from ..asyncapi_page import render_page
from ..consumers.chat import RoomConsumer
{%- if cookiecutter.use_notifications == "y" %}
from ..consumers.notifications import NotificationConsumer
{%- endif %}
from ..realtime.asyncapi import Channel, asyncapi_document

router = APIRouter(tags=["docs"])

DESCRIPTION = """\
Every frame is a JSON object with a `type`. A frame the server cannot act on is answered with an `error`
frame, and the connection stays open unless it is closed with one of these codes:

- 1008: no valid token, a room the user may not enter, a client that kept sending over the rate limit, or
  one connection more than a user may have open (the close reason says which)
- 1009: a frame over the size limit
- 1011: the server failed
- 1012: the instance is restarting: connect again
- 1013: the client read too slowly; connect again later
{%- if cookiecutter.use_gateway == "y" %}
- 1014: the gateway reached no instance; connect again later
{%- endif %}
"""

ROOMS_DESCRIPTION = """\
A chat room: its messages, who is here, and who is typing, across every instance of the service.

Every `chat.message` carries its room's `seq` (1, 2, 3... in the order messages were stored). Each
connection gets every stored message of the room once, in seq order, also across broker faults, without
reconnecting. With `?since=<seq>` (the last seq the client has), the stored messages after it come first, at
most a window of them (`WS_REPLAY_LIMIT`): beyond it a `history.truncated` frame gives the first seq that
follows, and older ones can be paged with `GET /rooms/{room}/messages?before=`. A client that kept a message
id rather than a seq sends `?since_id=<id>`. Closed with 1008 when the room does not exist, or is private and
the user is not a member, or `since` or `since_id` is not a non-negative integer.
"""
{%- if cookiecutter.use_notifications == "y" %}

NOTIFICATIONS_DESCRIPTION = """\
Topics in the manner of MQTT: filters with `+` for one level and `#` for the rest. Each user's own
notifications arrive on `users/<username>/notifications` without subscribing, from every instance. A filter
that could match another user's topics is refused with `forbidden`, and so is `send` unless the service
lets clients publish.
"""
{%- endif %}


class RoomQuery(BaseModel):
    since: int | SkipJsonSchema[None] = Field(
        default=None,
        ge=0,
        description="Replay the stored messages after this seq before the live ones.",
        examples=[7],
    )
    since_id: int | SkipJsonSchema[None] = Field(
        default=None,
        ge=0,
        description="For clients that kept a message id: replay the stored messages after that message.",
        examples=[42],
    )


CHANNELS = (
    Channel(
        "rooms",
        "/ws/rooms/{room}",
        RoomConsumer,
        description=ROOMS_DESCRIPTION,
        parameters={"room": "The room's address, as in `GET /rooms/{room}`."},
        query=RoomQuery,
    ),
{%- if cookiecutter.use_notifications == "y" %}
    Channel(
        "notifications", "/ws/notifications", NotificationConsumer, description=NOTIFICATIONS_DESCRIPTION
    ),
{%- endif %}
)


def server_url(request: Request) -> str:
    """The WebSocket URL of the service as the client reached it, through the gateway if there is one."""
    host = request.headers.get("x-forwarded-host", request.url.netloc).split(",")[0].strip()
    scheme = "wss" if request.url.scheme == "https" else "ws"
    return f"{scheme}://{host}{request.scope.get('root_path', '')}"


@lru_cache(maxsize=16)
def build_document(title: str, version: str, server_url: str, token_url: str) -> dict[str, Any]:
    """The document for one address of the service: built once, as the consumers do not change."""
    return asyncapi_document(
        CHANNELS,
        title=title,
        version=version,
        description=DESCRIPTION,
        server_url=server_url,
        token_url=token_url,
    )


def document_for(request: Request) -> dict[str, Any]:
    app = request.app
    return build_document(app.title, app.version, server_url(request), app.url_path_for("login"))


@router.get("/asyncapi.json", summary="The AsyncAPI 3.0 document of the WebSocket endpoints")
async def asyncapi_json(request: Request) -> JSONResponse:
    return JSONResponse(document_for(request))


@router.get("/asyncapi", response_class=HTMLResponse, summary="The WebSocket endpoints, described for people")
async def asyncapi_page(request: Request) -> HTMLResponse:
    return HTMLResponse(render_page(document_for(request), json_url="asyncapi.json"))
