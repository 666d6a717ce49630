"""What the service's consumers share: a signed-in user, a rate limit that ends in a close, and a limit on
how many connections a user may have open. docs/SECURITY.md ("How a socket is admitted") says where a
token may come from, how connections are counted and when a handshake reuses an account it has read.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from starlette import status
from starlette.websockets import WebSocket

from ..db.batched_reads import BatchedReads
from ..db.models import User
from ..db.refs import UserRecord
from ..db.users import TokenHolder, admits, user_for_claims, users_for_tokens
from ..realtime import (
    BrokerError,
    Connection,
    ConnectionState,
    JsonConsumer,
    RateLimit,
    WebSocketManager,
    reject,
    token_from,
)
from ..security.tokens import AccessClaims, InvalidTokenError, decode_access_token
from ..settings import Settings

logger = logging.getLogger(__name__)

CONNECTIONS_GROUP_PREFIX = "connections:"
ACCOUNT_GROUP_PREFIX = "account:"
SESSION_ENDED = "Session ended"
WATCH_BATCH = 500


def connections_group(username: str) -> str:
    """The presence set that counts the open connections of a user, on every instance."""
    return CONNECTIONS_GROUP_PREFIX + username


class SessionEnded(BaseModel):
    """The session is over; the server closes the socket with 1008 right after. Log in again to go on."""

    type: Literal["session.ended"] = "session.ended"
    reason: str = Field(examples=["the token expired", "logged out", "the account was disabled"])


def account_group(username: str) -> str:
    """The group of every socket of a user, on every instance: told when their session ends."""
    return ACCOUNT_GROUP_PREFIX + username


async def end_sessions(manager: WebSocketManager, username: str, reason: str) -> None:
    """Close every open socket of `username`, on every instance, with 1008 and `Session ended: <reason>`.

    Without the broker, the sockets are left to `AccountWatch`, which ends them within its interval."""
    try:
        await manager.group_send(account_group(username), SessionEnded(reason=reason).model_dump())
    except BrokerError as error:
        logger.warning("the sockets of %r are left to the account watch: %s", username, error)


async def read_account(
    session_factory: async_sessionmaker[AsyncSession], claims: AccessClaims
) -> UserRecord | None:
    """The active user `claims` were issued to, read from the database; None if revoked, gone or disabled."""
    async with session_factory() as session:
        user = await user_for_claims(session, claims=claims)
    return UserRecord.of(user) if user is not None else None


class UserConsumer(JsonConsumer):
    """A JSON consumer for signed-in users: subclasses call `authenticate()` first thing in `connect()`.

    Frames are rate limited (`WS_RATE_LIMIT_PER_SECOND`, `WS_RATE_LIMIT_BURST`): a frame over the limit is
    dropped and answered with `rate_limited`, and costs a token all the same, so a client that keeps on
    until it owes a whole burst is closed with 1008. `accept()` also counts the connection among its user's
    and closes it with 1008 when they have more than `WS_MAX_CONNECTIONS_PER_USER` open (see the module).
    """

    user: UserRecord
    token_expires_at: float = float("inf")
    token_key: str | None = None
    account_read_at: float = -float("inf")
    """When `user` was read from the database (`time.monotonic()`); -inf once the session has ended."""

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

    async def authenticate(self) -> UserRecord:
        """The active user the client's token was issued to; without one, the client is closed with 1008.

        The connection takes the user's name as its id: sends by id, and `exclude`, reach all their tabs.
        The user is kept as a record: the ORM object is dropped with its session (see `db.refs`).
        """
        token = token_from(self.websocket)
        if token is None:
            await reject(self.websocket, "Not authenticated")
        try:
            claims = decode_access_token(token, secret_key=self.settings.secret_key.get_secret_value())
        except InvalidTokenError:
            await reject(self.websocket, "Invalid or expired token, or its user no longer exists")
        user = await self._account(claims)
        if user is None:
            await reject(self.websocket, "Invalid or expired token, or its user no longer exists")
        self.user, self.token_expires_at, self.token_key = user, claims.expires_at, claims.key
        self.conn_id = user.username
        watch = self._account_watch()
        if watch is not None:
            watch.lend_from(self)
        return user

    async def _account(self, claims: AccessClaims) -> UserRecord | None:
        """The token's user: lent by a socket of this instance (see the module), or read from the database."""
        watch = self._account_watch()
        if watch is not None:
            user, self.account_read_at = await watch.account(claims)
            return user
        self.account_read_at = time.monotonic()
        return await read_account(self.session_factory, claims)

    def _account_watch(self) -> AccountWatch | None:
        watch: AccountWatch | None = getattr(self.websocket.app.state, "account_watch", None)
        return watch

    def session_problem(self, user: User | None = None, *, checked: bool = False) -> str | None:
        """Why this socket's session is over, or None: its token expired, or (when `checked`, with the
        account as it is now, None if gone) the account is disabled, deleted, or its tokens revoked."""
        if time.time() >= self.token_expires_at:
            return "the token expired"
        if checked and not admits(user, token_key=self.token_key):
            return "the account was disabled or deleted, or its tokens revoked"
        return None

    async def end_session(self, reason: str) -> None:
        """Tell the client why, and close with 1008."""
        self.account_read_at = -float("inf")
        if self.connection is None or self.connection.state is not ConnectionState.OPEN:
            return
        await self.send_json(SessionEnded(reason=reason).model_dump())
        await self.close(status.WS_1008_POLICY_VIOLATION, f"{SESSION_ENDED}: {reason}")

    async def session_ended(self, event: Mapping[str, Any]) -> None:
        """Sent by `end_sessions`, from any instance: the user's tokens may have been revoked."""
        watch = self._account_watch()
        if watch is not None:
            watch.forget(self.user)
        await self.end_session(str(event.get("reason", "")))

    async def receive(self, text: str | None = None, bytes_data: bytes | None = None) -> None:
        """Each frame, the session is checked first; an ended one is closed instead."""
        if (problem := self.session_problem()) is not None:
            await self.end_session(problem)
            return
        await super().receive(text, bytes_data)

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
            open_now = await self.manager.presence_join_and_count(group, connection, connection.uid)
        except BrokerError as error:
            logger.warning("admitted a connection of %r uncounted: %s", self.user.username, error)
            return connection
        if open_now > limit:
            await self.manager.presence_leave(group, connection)
            await reject(self.websocket, f"Too many connections: at most {limit} per user")
        await self.manager.group_add(account_group(self.user.username), connection)
        watch = self._account_watch()
        if watch is not None:
            watch.watch(self)
        return connection

    async def run(self) -> None:
        try:
            await super().run()
        finally:
            self.account_read_at = -float("inf")  # its account is lent to no handshake once it is over

    @property
    def account_lendable(self) -> bool:
        """Still shaking hands or connected, and the session has not ended as far as this socket knows."""
        return (
            (self.connection is None or self.connection.state is ConnectionState.OPEN)
            and self.account_read_at > -float("inf")
            and self.session_problem() is None
        )


class AccountWatch:
    """Ends the sessions of this instance's sockets whose token expired or whose account changed (see the
    module), checking them every `interval` seconds, all in a few queries; and lends a socket's account to a
    new one of the same token key, for `reuse_for` seconds after it was read: from the moment it was read,
    so that the handshakes of a storm that begin while the first of a user's is still on its way do not
    read it again. The accounts handshakes ask for while a read is on its way are read in the next, in one
    query (`BatchedReads`)."""

    def __init__(
        self, session_factory: async_sessionmaker[AsyncSession], interval: float, *, reuse_for: float = 0.0
    ) -> None:
        self.session_factory = session_factory
        self.interval = interval
        self.reuse_for = reuse_for
        self._consumers: weakref.WeakSet[UserConsumer] = weakref.WeakSet()
        self._by_user: dict[str, weakref.WeakSet[UserConsumer]] = {}
        self._reading: BatchedReads[TokenHolder, tuple[UserRecord | None, float]] = BatchedReads(
            "account-read", self._read
        )

    def lend_from(self, consumer: UserConsumer) -> None:
        """Lend the account `consumer` has just read, while it shakes hands and then while it is open."""
        if self.reuse_for > 0:
            self._by_user.setdefault(str(consumer.user.id), weakref.WeakSet()).add(consumer)

    def watch(self, consumer: UserConsumer) -> None:
        """Check the session of `consumer`, accepted, with the others."""
        self._consumers.add(consumer)

    async def account(self, claims: AccessClaims) -> tuple[UserRecord | None, float]:
        """The active user `claims` were issued to (None if revoked, gone or disabled), and when it was read
        from the database: lent by an open socket, or read with the others asked for meanwhile; within the
        reuse time, the handshakes of one user that ask at once share a read."""
        lent = self.lend(claims)
        if lent is not None:
            return lent
        return await self._reading.read((claims.subject, claims.key), join=self.reuse_for > 0)

    async def _read(
        self, holders: Sequence[TokenHolder]
    ) -> dict[TokenHolder, tuple[UserRecord | None, float]]:
        """The accounts of the handshakes that asked while the last read was on its way, in one query."""
        read_at = time.monotonic()
        async with self.session_factory() as session:
            users = await users_for_tokens(session, holders=holders)
        return {
            holder: (UserRecord.of(user) if (user := users.get(holder)) is not None else None, read_at)
            for holder in holders
        }

    def lend(self, claims: AccessClaims) -> tuple[UserRecord, float] | None:
        """The account of a socket, open or shaking hands, with the user and token key of `claims`, and
        when it was read, if that was less than `reuse_for` seconds ago."""
        sockets = self._by_user.get(claims.subject)
        if sockets is None:
            return None
        now = time.monotonic()
        for consumer in sockets:
            fresh = consumer.token_key == claims.key and now - consumer.account_read_at < self.reuse_for
            if fresh and consumer.account_lendable:
                return consumer.user, consumer.account_read_at
        if not sockets:
            del self._by_user[claims.subject]
        return None

    def forget(self, user: UserRecord) -> None:
        """Lend none of `user`'s accounts any more, nor share a read of them begun before: their session
        ended, maybe revoked."""
        for consumer in self._by_user.pop(str(user.id), ()):
            consumer.account_read_at = -float("inf")
        self._reading.forget(lambda key: key[0] == str(user.id))

    async def watch_forever(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.check()
            except Exception:
                logger.exception("could not check the accounts of the open sockets; trying again later")

    async def check(self) -> int:
        """End the sessions that are over; how many were."""
        consumers = [
            consumer
            for consumer in self._consumers
            if consumer.connection is not None and consumer.connection.state is ConnectionState.OPEN
        ]
        self._by_user = {user: sockets for user, sockets in self._by_user.items() if sockets}
        accounts = await self._accounts(sorted({consumer.user.id for consumer in consumers}))
        ended = 0
        for consumer in consumers:
            problem = consumer.session_problem(accounts.get(consumer.user.id), checked=True)
            if problem is not None:
                ended += 1
                await consumer.end_session(problem)
        return ended

    async def _accounts(self, user_ids: Sequence[int]) -> dict[int, User]:
        accounts: dict[int, User] = {}
        async with self.session_factory() as session:
            for start in range(0, len(user_ids), WATCH_BATCH):
                batch = user_ids[start : start + WATCH_BATCH]
                for user in await session.scalars(select(User).where(User.id.in_(batch))):
                    accounts[user.id] = user
        return accounts
