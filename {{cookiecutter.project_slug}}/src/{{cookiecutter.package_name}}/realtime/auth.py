"""Bearer tokens on WebSockets: from the `Authorization` header, the `token` query parameter, or the
`bearer, <token>` subprotocol pair (browsers cannot set headers on a WebSocket).

A refused client must see close code 1008, and a close before the handshake is seen as an HTTP 403
instead, so `reject()` completes the handshake first (echoing `bearer` when the client offered it,
without which a browser drops the connection) and then raises Starlette's `WebSocketException(1008)`:
Starlette's exception middleware, or `Consumer.run`, closes with that code and the endpoint stops.
"""

from __future__ import annotations

from typing import NoReturn

from fastapi.security import OAuth2PasswordBearer
from fastapi.security.utils import get_authorization_scheme_param
from starlette import status
from starlette.exceptions import WebSocketException
from starlette.websockets import WebSocket, WebSocketState

__all__ = [
    "BEARER_SUBPROTOCOL",
    "WebSocketOAuth2PasswordBearer",
    "bearer_subprotocol",
    "reject",
    "token_from",
]

BEARER_SUBPROTOCOL = "bearer"


def bearer_subprotocol(websocket: WebSocket) -> str | None:
    """`bearer` if the client offered it as a subprotocol (then the server must select it), else None."""
    offered = websocket.scope.get("subprotocols") or ()
    return BEARER_SUBPROTOCOL if BEARER_SUBPROTOCOL in offered else None


def token_from(websocket: WebSocket) -> str | None:
    """The bearer token the client sent, wherever it put it; None if it sent none."""
    scheme, credentials = get_authorization_scheme_param(websocket.headers.get("authorization"))
    if scheme.lower() == "bearer" and credentials:
        return credentials
    if token := websocket.query_params.get("token"):
        return token
    offered = list(websocket.scope.get("subprotocols") or ())
    if BEARER_SUBPROTOCOL in offered:
        position = offered.index(BEARER_SUBPROTOCOL) + 1
        if position < len(offered) and offered[position]:
            return str(offered[position])
    return None


async def reject(websocket: WebSocket, reason: str = "Not authenticated") -> NoReturn:
    """Refuse the client with close code 1008; raises, so the endpoint (or `connect()`) stops here."""
    if websocket.application_state is WebSocketState.CONNECTING:
        await websocket.accept(subprotocol=bearer_subprotocol(websocket))
    raise WebSocketException(code=status.WS_1008_POLICY_VIOLATION, reason=reason)


class WebSocketOAuth2PasswordBearer(OAuth2PasswordBearer):
    """`OAuth2PasswordBearer` for WebSocket routes: returns the token, or rejects with 1008 when missing.

    With `auto_error=False` a missing token gives None instead. Checking the token is the caller's job;
    an invalid one should be refused with `reject()` too.
    """

    # FastAPI injects the WebSocket because of this annotation; the HTTP variant takes any connection.
    async def __call__(self, websocket: WebSocket) -> str | None:  # type: ignore[override]
        token = token_from(websocket)
        if token is None and self.auto_error:
            await reject(websocket)
        return token
