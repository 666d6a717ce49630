"""The seed library's README examples (fastapi-distributed-websocket 0.2.0), written as its README does.

Only the import path is the engine's, and the README's typos are repaired as a user would (`@app.on_event`,
`websocket` for `ws`). Each documented function is called the way the README documents it: the ones it
lists as plain are called without `await` (`send`, `send_by_conn_id`, `send_msg`, `set_conn_id`,
`subscribe`, `unsubscribe`, `hanlde_subscription_message`, `connection.topics.add`), the ones its examples
await are awaited. Run as a process with
`uvicorn --factory tests.realtime.readme_app:create_app`; the environment chooses the broker
(`BROKER_URL`, `BROKER_CHANNEL`, `README_BROKER=custom` for the user broker below) and the gateway's target
(`WS_TARGET_ENDPOINT`).
"""

from __future__ import annotations

import json
import os
from typing import Any, Optional

import redis.asyncio
from fastapi import Depends, FastAPI, WebSocket, WebSocketDisconnect

from {{ cookiecutter.package_name }}.realtime import (
    BrokerInterface,
    Connection,
    InvalidSubscription,
    Message,
    WebSocketException,
    WebSocketManager,
    WebSocketOAuth2PasswordBearer,
    WebSocketProxy,
    ahandle,
    handle,
    hanlde_subscription_message,
    matches,
    subscribe,
    unsubscribe,
)


class RedisPubSubBroker(BrokerInterface):
    """A user's broker, as the README's "Broker Interfaces" says: only its six methods, on redis-py."""

    def __init__(self, url: str) -> None:
        self.url = url

    async def connect(self) -> None:
        self.redis = redis.asyncio.Redis.from_url(self.url)
        self.pubsub = self.redis.pubsub(ignore_subscribe_messages=True)

    async def disconnect(self) -> None:
        await self.pubsub.aclose()  # type: ignore[no-untyped-call]
        await self.redis.aclose()

    async def subscribe(self, channel: str) -> None:
        await self.pubsub.subscribe(channel)

    async def unsubscribe(self, channel: str) -> None:
        await self.pubsub.unsubscribe(channel)

    async def publish(self, channel: str, message: Any) -> None:
        await self.redis.publish(channel, json.dumps(message.__serialize__()))

    async def get_message(self, **kwargs: Any) -> Message | None:
        received = await self.pubsub.get_message(timeout=1.0)
        if received is None:
            return None
        return Message(**json.loads(received["data"]))


def create_app() -> FastAPI:
    broker_url = os.environ.get("BROKER_URL", "memory://")
    channel = os.environ.get("BROKER_CHANNEL", "channel:1")
    ws_target_endpoint = os.environ.get("WS_TARGET_ENDPOINT", "ws://127.0.0.1:8000/ws/{}")

    app = FastAPI()
    if os.environ.get("README_BROKER") == "custom":
        manager = WebSocketManager(channel, broker=RedisPubSubBroker(broker_url))
    else:
        manager = WebSocketManager(channel, broker_url=broker_url)
    app.state.manager = manager

    @app.on_event("startup")
    async def startup() -> None:
        await manager.startup()

    @app.on_event("shutdown")
    async def shutdown() -> None:
        await manager.shutdown()

    @app.get("/readyz")
    async def readyz() -> dict[str, bool]:
        return {"ready": manager.ready}

    # Basic usage: receive_json, broadcast, WebSocketDisconnect, remove_connection.
    @app.websocket("/ws/{conn_id}")
    async def websocket_endpoint(
        ws: WebSocket,
        conn_id: str,
        *,
        topic: Optional[Any] = None,  # noqa: UP045 - as the README writes it
    ) -> None:
        connection: Connection = await manager.new_connection(ws, conn_id)
        try:
            while True:
                msg = await connection.receive_json()
                await manager.broadcast(msg)
        except WebSocketDisconnect:
            await manager.remove_connection(connection)

    # The preferred way: iter_json and receive.
    @app.websocket("/iter/{conn_id}")
    async def iter_endpoint(
        ws: WebSocket,
        conn_id: str,
        *,
        topic: Optional[Any] = None,  # noqa: UP045 - as the README writes it
    ) -> None:
        connection: Connection = await manager.new_connection(ws, conn_id)
        # This is the preferred way of handling WebSocketDisconnect
        async for msg in connection.iter_json():
            await manager.receive(connection, msg)
        await manager.remove_connection(connection)

    # Exceptions: a handler reads the connection from the exception, for a sync and an async function.
    async def answer_invalid(exc: WebSocketException) -> None:
        await exc.connection.send_json({"type": "invalid", "message": exc.message})  # type: ignore[union-attr]

    def bad_topics(exc: InvalidSubscription) -> list[str]:
        return [f"invalid: {exc.message}"]

    @handle(InvalidSubscription, bad_topics)
    def checked_topics(connection: Connection, topic: str) -> list[str]:
        connection.topics.add(topic)  # the README's set of subscription patterns
        return sorted(connection.topics)

    @ahandle(WebSocketException, answer_invalid)
    def sync_command(connection: Connection, msg: dict[str, Any]) -> None:
        if msg["type"] in ("subscribe", "unsubscribe"):
            hanlde_subscription_message(connection, Message(type=msg["type"], topic=msg["topic"]))
        elif msg["type"] == "subscribe_plain":
            subscribe(connection, Message(type="subscribe", topic=msg["topic"]))
        elif msg["type"] == "unsubscribe_plain":
            unsubscribe(connection, Message(type="unsubscribe", topic=msg["topic"]))
        elif msg["type"] == "send":
            manager.send(msg["topic"], {"type": "news", "data": msg["data"]})
        elif msg["type"] == "send_by_conn_id":
            manager.send_by_conn_id(msg["conn_id"], {"type": "direct", "data": msg["data"]})
        elif msg["type"] == "send_msg":
            manager.send_msg(Message(type="broadcast", data=msg["data"]))
        elif msg["type"] == "broadcast":
            manager.broadcast({"type": "all", "data": msg["data"]})
        elif msg["type"] == "set_conn_id":
            manager.set_conn_id(connection, msg["conn_id"])

    @ahandle(WebSocketException, answer_invalid)
    async def async_command(connection: Connection, msg: dict[str, Any]) -> None:
        if msg["type"] == "topics":
            await connection.send_json({"type": "topics", "topics": checked_topics(connection, msg["topic"])})
        elif msg["type"] == "matches":
            result = matches(msg["topic"], set(msg["patterns"]))
            await connection.send_json({"type": "matches", "result": result})
        else:
            await sync_command(connection, msg)  # ahandle makes it a coroutine function

    @app.websocket("/api/{conn_id}")
    async def api_endpoint(ws: WebSocket, conn_id: str) -> None:
        connection: Connection = await manager.new_connection(ws, conn_id)
        async for msg in connection.iter_json():
            await async_command(connection, msg)
        await manager.remove_connection(connection)

    # Authentication: the token, or 1008 without one.
    @app.websocket("/auth/{conn_id}")
    async def auth_endpoint(
        ws: WebSocket,
        conn_id: str,
        token: str | None = Depends(WebSocketOAuth2PasswordBearer(tokenUrl="token")),
    ) -> None:
        if token is None:
            return
        connection: Connection = await manager.new_connection(ws, conn_id)
        await connection.send_json({"type": "token", "token": token})
        async for msg in connection.iter_json():
            await manager.receive(connection, msg)
        await manager.remove_connection(connection)

    # Proxy from an API gateway.
    @app.websocket("/gateway/{conn_id}")
    async def gateway_endpoint(
        websocket: WebSocket,
        conn_id: str,
    ) -> None:
        await websocket.accept()
        ws_proxy = WebSocketProxy(websocket, ws_target_endpoint.format(conn_id))
        await ws_proxy()

    return app
