"""A bare Redis pub/sub relay: each frame received on `/ws` is published on one Redis channel, and every
process subscribed to that channel writes what arrives to each of its sockets.

The least several processes can do to fan a message out through Redis: one PUBLISH per message, one
listener per process, no envelope, no encoding.
`BENCH_REDIS_URL=redis://... BENCH_CHANNEL=name uvicorn bench.baselines.redis_relay:app`
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator

from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
CHANNEL = os.environ.get("BENCH_CHANNEL", "bench-relay")

sockets: set[WebSocket] = set()
redis: Redis = Redis.from_url(REDIS_URL)


async def relay(websocket: WebSocket) -> None:
    await websocket.accept()
    sockets.add(websocket)
    try:
        while True:
            await redis.publish(CHANNEL, await websocket.receive_text())
    except WebSocketDisconnect:
        pass
    finally:
        sockets.discard(websocket)


async def listen(pubsub: PubSub) -> None:
    async for message in pubsub.listen():
        text = message["data"].decode()
        for peer in list(sockets):
            try:
                await peer.send_text(text)
            except (WebSocketDisconnect, RuntimeError, OSError):
                sockets.discard(peer)


@contextlib.asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    async with redis.pubsub(ignore_subscribe_messages=True) as pubsub:
        await pubsub.subscribe(CHANNEL)
        listener = asyncio.create_task(listen(pubsub))
        try:
            yield
        finally:
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listener
    await redis.aclose()


async def healthz(request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok")


app = Starlette(routes=[Route("/healthz", healthz), WebSocketRoute("/ws", relay)], lifespan=lifespan)
