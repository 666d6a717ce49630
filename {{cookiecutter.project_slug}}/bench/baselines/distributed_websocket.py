"""fastapi-distributed-websocket 0.2.0, the library whose API the engine implements, as its README runs it
across instances: each socket is a `Connection` subscribed to the room's topic, and each frame a client
sends goes through `manager.receive` as a `send` to that topic, published on the broker, heard by every
process and written to each matching connection.

The load generator speaks the relays' protocol (a frame sent comes back as it is), so the endpoint wraps a
frame into the library's `send` message and its connections join the topic when they connect: a client of
the library would send `{"type": "subscribe", ...}` and `{"type": "send", ...}` itself. Subscribers get
`{"data": <the frame>}`, which the load generator reads.
`BENCH_BROKER_URL=memory:// BENCH_CHANNEL=name uvicorn bench.baselines.distributed_websocket:app` (or a
`redis://` URL, for several processes)
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import AsyncIterator

from distributed_websocket import WebSocketManager  # type: ignore[import-untyped]
from fastapi import FastAPI, WebSocket
from starlette.responses import PlainTextResponse

BROKER_URL = os.environ.get("BENCH_BROKER_URL", "memory://")
CHANNEL = os.environ.get("BENCH_CHANNEL", "bench-distributed-websocket")
TOPIC = "room"

manager = WebSocketManager(CHANNEL, broker_url=BROKER_URL)


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    await manager.startup()
    try:
        yield
    finally:
        await manager.shutdown()


app = FastAPI(lifespan=lifespan)


@app.websocket("/ws")
async def room(websocket: WebSocket) -> None:
    connection = await manager.new_connection(websocket, uuid.uuid4().hex, topic=TOPIC)
    async for frame in connection.iter_json():
        await manager.receive(connection, {"type": "send", "topic": TOPIC, "data": frame})
    manager.remove_connection(connection)


@app.get("/healthz")
async def healthz() -> PlainTextResponse:
    return PlainTextResponse("ok")
