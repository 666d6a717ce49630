"""A bare Starlette relay: each frame received on `/ws` is written to every socket of this process.

The least a single process can do to fan a message out: no queue, no task per socket, no encoding.
`uvicorn bench.baselines.relay:app`
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

sockets: set[WebSocket] = set()


async def relay(websocket: WebSocket) -> None:
    await websocket.accept()
    sockets.add(websocket)
    try:
        while True:
            text = await websocket.receive_text()
            for peer in list(sockets):
                try:
                    await peer.send_text(text)
                except (WebSocketDisconnect, RuntimeError, OSError):
                    sockets.discard(peer)
    except WebSocketDisconnect:
        pass
    finally:
        sockets.discard(websocket)


async def healthz(request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok")


app = Starlette(routes=[Route("/healthz", healthz), WebSocketRoute("/ws", relay)])
