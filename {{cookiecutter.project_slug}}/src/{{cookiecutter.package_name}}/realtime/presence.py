"""Who is in a group, across every instance, kept in the broker with a deadline per connection.

Each connection present in a group is one entry (its uid, and its member, say a user) in an expiring set
of the broker. A member with several connections is present while any of them is. Joining and leaving are
atomic in the broker, which says whether the member arrived or left with that connection, even when
instances change the same member at once: the app announces each arrival and departure exactly once.

Every `ttl / 3` seconds the heartbeat pushes back the deadlines of this instance's entries and evicts the
expired entries of its groups. The entries of an instance that died expire `ttl` seconds after their last
heartbeat, and the first surviving instance to evict them learns which members that left absent; those
changes that nobody announced go to the manager's `on_presence_change`, as `PresenceChange`s. So do the
members of a stalled instance that the heartbeat adds back, and the departures of connections that the
manager removed without their presence being left first (`remove_connection`, `shutdown`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

from .brokers import BrokerInterface, PresenceDelta
from .connection import Connection

__all__ = ["Presence", "PresenceChange"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class PresenceChange:
    """Members of `group` who arrived (`joined`) or went (`left`) without a `presence_join` or
    `presence_leave` saying so: see the module."""

    group: str
    joined: frozenset[str]
    left: frozenset[str]


class Presence:
    def __init__(
        self,
        broker: BrokerInterface,
        prefix: str,
        ttl: float,
        on_change: Callable[[PresenceChange], Awaitable[None]] | None = None,
    ) -> None:
        self.broker = broker
        self.prefix = prefix
        self.ttl = ttl
        self.on_change = on_change
        self._local: dict[str, dict[Connection, str]] = {}
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    def key(self, group: str) -> str:
        return f"{self.prefix}:presence:{group}"

    async def join(self, group: str, connection: Connection, member: str) -> bool:
        """Mark `connection` present in `group` as `member`; True when the member was absent before."""
        async with self._exclusive(group):
            entries = self._local.setdefault(group, {})
            previous = entries.get(connection)
            entries[connection] = member
            remove = {connection.uid: previous} if previous not in (None, member) else {}
            delta = await self._update(group, add={connection.uid: member}, remove=remove)
        await self._report(group, delta, member)
        return member in delta.joined

    async def leave(self, group: str, connection: Connection) -> bool:
        """Forget `connection` in `group`; True when its member is now absent from every instance."""
        async with self._exclusive(group):
            member = self._forget(group, connection)
            if member is None:
                return False
            delta = await self._update(group, remove={connection.uid: member})
        await self._report(group, delta, member)
        return member in delta.left

    async def leave_all(self, connection: Connection) -> None:
        """Forget `connection` in every group; members it leaves absent are reported as changes."""
        for group in [group for group, entries in self._local.items() if connection in entries]:
            async with self._exclusive(group):
                member = self._forget(group, connection)
                if member is None:
                    continue
                delta = await self._update(group, remove={connection.uid: member})
            await self._report(group, delta)

    async def members(self, group: str) -> set[str]:
        """The members present in `group` on any instance."""
        return await self.broker.presence_members(self.key(group))

    async def heartbeat(self) -> None:
        """Push back the deadlines of this instance's entries, and evict the expired ones of its groups."""
        for group in list(self._local):
            async with self._exclusive(group):
                entries = self._local.get(group, {})
                delta = await self._update(group, add={each.uid: member for each, member in entries.items()})
            await self._report(group, delta)

    async def beat_forever(self) -> None:
        while True:
            await asyncio.sleep(self.ttl / 3)
            try:
                await self.heartbeat()
            except Exception:
                logger.exception("could not refresh presence; entries of this instance may expire")

    def _forget(self, group: str, connection: Connection) -> str | None:
        entries = self._local.get(group, {})
        member = entries.pop(connection, None)
        if not entries:
            self._local.pop(group, None)
        return member

    async def _update(
        self, group: str, *, add: dict[str, str] | None = None, remove: dict[str, str] | None = None
    ) -> PresenceDelta:
        return await self.broker.presence_update(self.key(group), add=add, remove=remove, ttl=self.ttl)

    async def _report(self, group: str, delta: PresenceDelta, caller: str | None = None) -> None:
        """Pass on what changed besides `caller`'s own arrival or departure, which its caller announces."""
        joined = frozenset(member for member in delta.joined if member != caller)
        left = frozenset(member for member in delta.left if member != caller)
        if self.on_change is None or not (joined or left):
            return
        try:
            await self.on_change(PresenceChange(group, joined, left))
        except Exception:
            logger.exception("on_presence_change failed for %s in %r", sorted(joined | left), group)

    @asynccontextmanager
    async def _exclusive(self, group: str) -> AsyncIterator[None]:
        """One presence update of `group` at a time on this instance, so that a heartbeat never adds back
        an entry whose leave overtook it."""
        lock, holders = self._locks.get(group, (asyncio.Lock(), 0))
        self._locks[group] = (lock, holders + 1)
        try:
            async with lock:
                yield
        finally:
            lock, holders = self._locks[group]
            if holders == 1:
                del self._locks[group]
            else:
                self._locks[group] = (lock, holders - 1)
