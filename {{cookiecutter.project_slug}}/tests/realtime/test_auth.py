"""Bearer tokens on WebSockets: header, query parameter or subprotocol; a refusal is close code 1008."""

from __future__ import annotations

from typing import Annotated

import pytest
from fastapi import Depends, FastAPI, WebSocket
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

from {{ cookiecutter.package_name }}.realtime import (
    JsonConsumer,
    WebSocketManager,
    WebSocketOAuth2PasswordBearer,
    reject,
)

from .support import receive_json, serve

required = WebSocketOAuth2PasswordBearer(tokenUrl="/auth/token")
optional = WebSocketOAuth2PasswordBearer(tokenUrl="/auth/token", auto_error=False)


def token_app() -> FastAPI:
    app = FastAPI()

    @app.websocket("/required")
    async def with_token(websocket: WebSocket, token: Annotated[str, Depends(required)]) -> None:
        await websocket.accept(subprotocol="bearer" if "bearer" in websocket.scope["subprotocols"] else None)
        await websocket.send_json({"token": token})
        await websocket.close()

    @app.websocket("/optional")
    async def maybe_token(websocket: WebSocket, token: Annotated[str | None, Depends(optional)]) -> None:
        await websocket.accept()
        await websocket.send_json({"token": token})
        await websocket.close()

    return app


@pytest.mark.parametrize(
    ("path", "options"),
    [
        ("/required", {"additional_headers": {"Authorization": "Bearer t0k3n"}}),
        ("/required?token=t0k3n", {}),
        ("/required", {"subprotocols": [Subprotocol("bearer"), Subprotocol("t0k3n")]}),
    ],
)
async def test_the_token_is_read_from_header_query_or_subprotocol(
    path: str, options: dict[str, object]
) -> None:
    async with serve([], app=token_app()) as url, connect(f"{url}{path}", **options) as client:
        assert await receive_json(client) == {"token": "t0k3n"}


async def test_a_missing_token_closes_with_1008_unless_optional() -> None:
    async with serve([], app=token_app()) as url:
        async with connect(f"{url}/required", subprotocols=[Subprotocol("bearer")]) as client:
            assert client.subprotocol == "bearer"
            with pytest.raises(ConnectionClosed) as closed:
                await receive_json(client)
            assert closed.value.rcvd is not None
            assert closed.value.rcvd.code == 1008
        async with connect(f"{url}/optional") as client:
            assert await receive_json(client) == {"token": None}


class GuardedConsumer(JsonConsumer):
    async def connect(self) -> None:
        if await required(self.websocket) != "good":
            await reject(self.websocket, "invalid token")
        await self.accept()
        await self.send_json({"type": "welcome"})


async def test_a_consumer_rejects_a_bad_token_with_1008(manager: WebSocketManager) -> None:
    async with serve({"/ws": GuardedConsumer.as_endpoint(manager)}) as url:
        async with connect(f"{url}/ws?token=good") as client:
            assert await receive_json(client) == {"type": "welcome"}
        for query in ("?token=bad", ""):
            async with connect(f"{url}/ws{query}") as client:
                with pytest.raises(ConnectionClosed) as closed:
                    await receive_json(client)
                assert closed.value.rcvd is not None
                assert closed.value.rcvd.code == 1008
    assert len(manager) == 0
