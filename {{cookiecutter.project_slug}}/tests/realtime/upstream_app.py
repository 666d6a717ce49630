"""A small app standing in for an app instance behind a proxy: it says who it is and what it received.

Run as a process with `uvicorn --factory tests.realtime.upstream_app:create_upstream_app` from the project
directory (`INSTANCE_NAME` names it), or served in the test's event loop.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

ALL_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "PURGE"]
PREFERRED_SUBPROTOCOLS = ("chat.v2", "chat.v1")


def create_upstream_app(instance: str | None = None) -> Starlette:
    name = instance or os.environ.get("INSTANCE_NAME", "upstream")
    released = asyncio.Event()
    upload = {"received": 0}
    websocket_closes: list[dict[str, object]] = []
    flood = {"sent": 0}

    def tagged(response: Response) -> Response:
        response.headers["x-instance"] = name
        return response

    async def healthz(_request: Request) -> Response:
        return tagged(JSONResponse({"status": "ok", "instance": name}))

    async def echo(request: Request) -> Response:
        body = await request.body()
        response = JSONResponse(
            {
                "instance": name,
                "method": request.method,
                "path": request.scope["raw_path"].decode(),
                "query": request.url.query,
                "headers": [[key, value] for key, value in request.headers.items()],
                "body": body.decode(errors="replace"),
            },
            status_code=int(request.query_params.get("status", "200")),
        )
        response.headers["keep-alive"] = "timeout=5"
        response.headers["connection"] = "x-upstream-hop"
        response.headers["x-upstream-hop"] = "must not cross the proxy"
        response.set_cookie("session", f"issued-by-{name}")
        return tagged(response)

    async def slow(request: Request) -> Response:
        await asyncio.sleep(float(request.query_params["seconds"]))
        return tagged(JSONResponse({"instance": name}))

    async def held_stream(_request: Request) -> Response:
        """Sends `first`, then holds the rest back until `/release` is called."""
        released.clear()

        async def chunks() -> AsyncIterator[bytes]:
            yield b"first;"
            await released.wait()
            yield b"second"

        return tagged(StreamingResponse(chunks(), media_type="text/plain"))

    async def release(_request: Request) -> Response:
        released.set()
        return Response(status_code=204)

    async def upload_stream(request: Request) -> Response:
        """Reads the body chunk by chunk, counting the bytes in `/upload-progress` as they arrive."""
        upload["received"] = 0
        digest = hashlib.sha256()
        async for chunk in request.stream():
            upload["received"] += len(chunk)
            digest.update(chunk)
        return tagged(JSONResponse({"received": upload["received"], "sha256": digest.hexdigest()}))

    async def upload_progress(_request: Request) -> Response:
        return JSONResponse(upload)

    async def closes(_request: Request) -> Response:
        return JSONResponse(websocket_closes)

    async def flood_progress(_request: Request) -> Response:
        return JSONResponse(flood)

    async def websocket_echo(websocket: WebSocket) -> None:
        """Says hello with what it was sent, echoes every frame, closes on `close:<code>:<reason>`, and sends
        `<count>` frames of `<size>` bytes on `flood:<count>:<size>`, counting them in `/flood-progress`."""
        offered = websocket.scope.get("subprotocols", [])
        subprotocol = next((name for name in PREFERRED_SUBPROTOCOLS if name in offered), None)
        await websocket.accept(subprotocol=subprotocol, headers=[(b"x-instance", name.encode())])
        await websocket.send_json(
            {
                "instance": name,
                "offered": offered,
                "subprotocol": subprotocol,
                "query": websocket.url.query,
                "headers": [[key, value] for key, value in websocket.headers.items()],
            }
        )
        try:
            while True:
                message = await websocket.receive()
                if message["type"] == "websocket.disconnect":
                    raise WebSocketDisconnect(message["code"], message.get("reason"))
                text = message.get("text")
                if text is not None and text.startswith("close:"):
                    _, code, reason = text.split(":", 2)
                    await websocket.close(int(code), reason)
                    return
                if text is not None and text.startswith("flood:"):
                    _, count, size = text.split(":")
                    flood["sent"] = 0
                    for _ in range(int(count)):
                        await websocket.send_bytes(bytes(int(size)))
                        flood["sent"] += 1
                    continue
                if text is not None:
                    await websocket.send_text(text)
                else:
                    await websocket.send_bytes(message["bytes"])
        except WebSocketDisconnect as disconnect:
            websocket_closes.append({"code": disconnect.code, "reason": disconnect.reason})

    async def websocket_refuse(websocket: WebSocket) -> None:
        await websocket.send_denial_response(tagged(Response("members only", status_code=401)))

    return Starlette(
        routes=[
            Route("/healthz", healthz),
            Route("/echo/{rest:path}", echo, methods=ALL_METHODS),
            Route("/slow", slow),
            Route("/held-stream", held_stream),
            Route("/release", release, methods=["POST"]),
            Route("/upload", upload_stream, methods=["POST"]),
            Route("/upload-progress", upload_progress),
            Route("/websocket-closes", closes),
            Route("/flood-progress", flood_progress),
            WebSocketRoute("/ws/echo", websocket_echo),
            WebSocketRoute("/ws/refuse", websocket_refuse),
        ]
    )
