"""What the service's consumers share: a signed-in user, a rate limit that ends in a close, and a limit on
how many connections a user may have open.

The bearer token comes from the `Authorization` header, the `token` query parameter, or the `bearer, <token>`
subprotocol pair that browsers use. A client without a valid token is accepted and at once closed with 1008
and a reason: a handshake refused before accepting reaches the client as an HTTP 403 without any close code.

A user's WebSockets, on every endpoint and every instance, are counted in a presence set of the broker (see
`realtime.presence`), with one entry per connection: an entry leaves with its connection, and those of an
instance that died expire `WS_PRESENCE_TTL_SECONDS` after its last heartbeat, so a crash leaks no slot for
longer. A connection that finds more than `WS_MAX_CONNECTIONS_PER_USER` entries, its own included, is closed
with 1008. Each connection counts itself before it looks, so two opened at once when one slot is left may
both be refused, but never both admitted. While the broker cannot be reached, connections are admitted
uncounted, and the heartbeat counts them once it is back.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from starlette.websockets import WebSocket

from ..db.models import User
from ..deps import get_user_from_token
from ..realtime import BrokerError, Connection, JsonConsumer, RateLimit, WebSocketManager, reject, token_from
from ..settings import Settings

logger = logging.getLogger(__name__)

CONNECTIONS_GROUP_PREFIX = "connections:"


def connections_group(username: str) -> str:
    """The presence set that counts the open connections of a user, on every instance."""
    return CONNECTIONS_GROUP_PREFIX + username


class UserConsumer(JsonConsumer):
    """A JSON consumer for signed-in users: subclasses call `authenticate()` first thing in `connect()`.

    Frames are rate limited (`WS_RATE_LIMIT_PER_SECOND`, `WS_RATE_LIMIT_BURST`): a frame over the limit is
    dropped and answered with `rate_limited`, and costs a token all the same, so a client that keeps on
    until it owes a whole burst is closed with 1008. `accept()` also counts the connection among its user's
    and closes it with 1008 when they have more than `WS_MAX_CONNECTIONS_PER_USER` open (see the module).
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

    async def accept(
        self, subprotocol: str | None = None, headers: Iterable[tuple[bytes, bytes]] = ()
    ) -> Connection:
        """Accept the client, then count it among its user's connections: over the limit, close with 1008."""
        if self.connection is not None:
            return self.connection
        if not hasattr(self, "user"):
            raise RuntimeError("authenticate() the user before accepting their connection")
        connection = await super().accept(subprotocol, headers)
        limit = self.settings.ws_max_connections_per_user
        group = connections_group(self.user.username)
        try:
            await self.manager.presence_join(group, connection, connection.uid)
            open_now = len(await self.manager.presence_members(group))
        except BrokerError as error:
            logger.warning("admitted a connection of %r uncounted: %s", self.user.username, error)
            return connection
        if open_now > limit:
            await self.manager.presence_leave(group, connection)
            await reject(self.websocket, f"Too many connections: at most {limit} per user")
        return connection
