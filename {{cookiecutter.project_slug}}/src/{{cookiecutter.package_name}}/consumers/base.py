"""What the service's consumers share: a signed-in user, and a rate limit that ends in a close.

The bearer token comes from the `Authorization` header, the `token` query parameter, or the `bearer, <token>`
subprotocol pair that browsers use. A client without a valid token is accepted and at once closed with 1008
and a reason: a handshake refused before accepting reaches the client as an HTTP 403 without any close code.
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from starlette.websockets import WebSocket

from ..db.models import User
from ..deps import get_user_from_token
from ..realtime import JsonConsumer, RateLimit, WebSocketManager, reject, token_from
from ..settings import Settings


class UserConsumer(JsonConsumer):
    """A JSON consumer for signed-in users: subclasses call `authenticate()` first thing in `connect()`.

    Frames are rate limited (`WS_RATE_LIMIT_PER_SECOND`, `WS_RATE_LIMIT_BURST`): a frame over the limit is
    dropped and answered with `rate_limited`, and costs a token all the same, so a client that keeps on
    until it owes a whole burst is closed with 1008.
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
        burst = settings.ws_rate_limit_burst
        rate_limit = RateLimit(per_second=settings.ws_rate_limit_per_second, burst=burst, close_after=burst)
        super().__init__(websocket, manager, rate_limit=rate_limit)
        self.settings = settings
        self.session_factory = session_factory

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
