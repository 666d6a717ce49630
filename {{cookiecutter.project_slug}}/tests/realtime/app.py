"""A small service for the multi-process tests: one room consumer behind a manager on `BROKER_URL`.

Run it with `python -m uvicorn --factory tests.realtime.app:create_app` from the project directory.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Literal

from pydantic import BaseModel
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute

from {{ cookiecutter.package_name }}.realtime import JsonConsumer, WebSocketManager, handler


class Say(BaseModel):
    type: Literal["say"]
    text: str


class Said(BaseModel):
    type: Literal["said"] = "said"
    text: str
    instance: str


class RoomConsumer(JsonConsumer):
    groups = ("room",)

    @handler(sends=[Said])
    async def on_say(self, message: Say) -> None:
        await self.group_send("room", Said(text=message.text, instance=os.environ["INSTANCE_NAME"]))


def create_app() -> Starlette:
    manager = WebSocketManager(os.environ["BROKER_CHANNEL"], os.environ["BROKER_URL"])

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with manager:
            yield

    async def readyz(request: Request) -> JSONResponse:
        return JSONResponse({"ready": manager.ready}, status_code=200 if manager.ready else 503)

    return Starlette(
        routes=[WebSocketRoute("/ws", RoomConsumer.as_endpoint(manager)), Route("/readyz", readyz)],
        lifespan=lifespan,
    )
