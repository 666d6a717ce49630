"""What the service's consumers share: a signed-in user, and a rate limit that ends in a close.

The bearer token comes from the `Authorization` header, the `token` query parameter, or the `bearer, <token>`
subprotocol pair that browsers use. A client without a valid token is accepted and at once closed with 1008
and a reason: a handshake refused before accepting reaches the client as an HTTP 403 without any close code.
"""

from __future__ import annotations

import enum
import time

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from starlette.exceptions import WebSocketException as CloseConnection
from starlette.websockets import WebSocket

from ..db.models import User
from ..deps import get_user_from_token
from ..realtime import (
    Connection,
    JsonConsumer,
    RateLimit,
    WebSocketException,
    WebSocketManager,
    error_frame,
    reject,
    token_from,
)
from ..settings import Settings

WS_1008_POLICY_VIOLATION = 1008


class Spend(enum.Enum):
    ALLOWED = "allowed"
    REFUSED = "refused"
    EXHAUSTED = "exhausted"


class FrameBudget:
    """A token bucket that a client can overdraw, because refused frames cost a token too.

    A frame is allowed while a token is left and refused after that, so the client has to pause for the
    balance to recover; one that keeps sending until it owes a whole `burst` has ignored every warning.
    """

    def __init__(self, limit: RateLimit) -> None:
        self.limit = limit
        self.tokens = float(limit.burst)
        self.updated = time.monotonic()

    def spend(self) -> Spend:
        now = time.monotonic()
        self.tokens = min(self.limit.burst, self.tokens + (now - self.updated) * self.limit.per_second)
        self.updated = now
        self.tokens -= 1
        if self.tokens >= 0:
            return Spend.ALLOWED
        return Spend.REFUSED if self.tokens >= -self.limit.burst else Spend.EXHAUSTED


class UserConsumer(JsonConsumer):
    """A JSON consumer for signed-in users: subclasses call `authenticate()` first thing in `connect()`.

    Each frame spends from a `FrameBudget` (`WS_RATE_LIMIT_PER_SECOND`, `WS_RATE_LIMIT_BURST`): a frame over
    the limit is dropped and answered with `rate_limited`, and a client that keeps on is closed with 1008.
    """

    user: User

    def __init__(
        self,
        websocket: WebSocket,
        manager: WebSocketManager,
        *,
        settings: Settings,
        session_factory: async_sessionmaker[AsyncSession],
    ) -> None:
        super().__init__(websocket, manager)
        self.settings = settings
        self.session_factory = session_factory
        self.budget = FrameBudget(
            RateLimit(per_second=settings.ws_rate_limit_per_second, burst=settings.ws_rate_limit_burst)
        )

    @property
    def accepted(self) -> Connection:
        """The connection, once `accept()` has returned."""
        if self.connection is None:
            raise RuntimeError(f"{type(self).__name__} has not accepted its connection yet")
        return self.connection

    async def authenticate(self) -> User:
        """The active user the client's token was issued to; without one, the client is closed with 1008.

        The connection takes the user's name as its id: sends by id, and `exclude`, reach all their tabs.
        """
        token = token_from(self.websocket)
        if token is None:
            await reject(self.websocket, "Not authenticated")
        async with self.session_factory() as session:
            user = await get_user_from_token(session, token=token, settings=self.settings)
        if user is None:
            await reject(self.websocket, "Invalid or expired token, or its user no longer exists")
        self.conn_id = user.username
        return user

    async def receive(self, text: str | None = None, bytes_data: bytes | None = None) -> None:
        spent = self.budget.spend()
        if spent is Spend.EXHAUSTED:
            await self.send_json(error_frame("rate_limited", "still too many frames; closing"))
            raise CloseConnection(code=WS_1008_POLICY_VIOLATION, reason="Rate limit exceeded")
        if spent is Spend.REFUSED:
            raise WebSocketException("too many frames; this one was dropped", code="rate_limited")
        await super().receive(text, bytes_data)
