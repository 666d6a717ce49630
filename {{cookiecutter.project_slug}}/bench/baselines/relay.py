"""A bare Starlette relay: each frame received on `/ws` is written to every socket of this process.

The least a single process can do to fan a message out: no queue, no task per socket, no encoding.
`uvicorn bench.baselines.relay:app`
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

sockets: set[WebSocket] = set()


async def serve(websocket: WebSocket, fan_out: Callable[[str], Awaitable[None]]) -> None:
    """Hold `websocket` among this process's sockets and hand each text frame it sends to `fan_out`."""
    await websocket.accept()
    sockets.add(websocket)
    try:
        while True:
            await fan_out(await websocket.receive_text())
    except WebSocketDisconnect:
        pass
    finally:
        sockets.discard(websocket)


async def write_to_all(text: str) -> None:
    """Write `text` to every socket of this process in turn; one that fails is dropped."""
    for peer in list(sockets):
        try:
            await peer.send_text(text)
        except (WebSocketDisconnect, RuntimeError, OSError):
            sockets.discard(peer)


async def relay(websocket: WebSocket) -> None:
    await serve(websocket, write_to_all)


async def healthz(request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok")


app = Starlette(routes=[Route("/healthz", healthz), WebSocketRoute("/ws", relay)])
