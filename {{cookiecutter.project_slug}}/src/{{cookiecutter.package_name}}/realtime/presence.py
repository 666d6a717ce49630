"""Who is in a group, across every instance, kept in the broker with a deadline per connection.

Each connection present in a group is one entry `<connection uid>:<member>` in an expiring set at
`<prefix>:presence:<group>`. The instance refreshes the deadlines of its own entries every `ttl / 3`
seconds; the entries of an instance that died stop being refreshed and are evicted `ttl` seconds later,
so they never haunt a room for long. A member (say, a user) with several connections is present while any
of them is, which is what `join` and `leave` report, so that the app announces a user once. Deadlines are
wall-clock times: the instances' clocks are assumed to agree to well within `ttl`.
"""

from __future__ import annotations

from .brokers import BrokerInterface
from .connection import Connection

__all__ = ["Presence"]


def _member_of(entry: str) -> str:
    return entry.partition(":")[2]


class Presence:
    def __init__(self, broker: BrokerInterface, prefix: str, ttl: float) -> None:
        self.broker = broker
        self.prefix = prefix
        self.ttl = ttl
        self._local: dict[str, dict[Connection, str]] = {}

    def key(self, group: str) -> str:
        return f"{self.prefix}:presence:{group}"

    async def join(self, group: str, connection: Connection, member: str) -> bool:
        """Mark `connection` present in `group` as `member`; True when the member was absent before."""
        entries = self._local.setdefault(group, {})
        previous = entries.get(connection)
        entry = entries[connection] = f"{connection.uid}:{member}"
        if previous is not None and previous != entry:
            await self.broker.presence_remove(self.key(group), [previous])
        await self.broker.presence_add(self.key(group), [entry], self.ttl)
        present = await self.broker.presence_members(self.key(group))
        return sum(_member_of(other) == member for other in present) == 1

    async def leave(self, group: str, connection: Connection) -> bool:
        """Forget `connection` in `group`; True when its member is now absent from every instance."""
        entries = self._local.get(group, {})
        entry = entries.pop(connection, None)
        if not entries:
            self._local.pop(group, None)
        if entry is None:
            return False
        await self.broker.presence_remove(self.key(group), [entry])
        present = await self.broker.presence_members(self.key(group))
        member = _member_of(entry)
        return all(_member_of(other) != member for other in present)

    async def leave_all(self, connection: Connection) -> None:
        for group in [group for group, entries in self._local.items() if connection in entries]:
            await self.leave(group, connection)

    async def members(self, group: str) -> set[str]:
        """The members present in `group` on any instance (entries past their deadline are evicted)."""
        return {_member_of(entry) for entry in await self.broker.presence_members(self.key(group))}

    async def refresh(self) -> None:
        """Push back the deadlines of this instance's entries."""
        for group, entries in list(self._local.items()):
            await self.broker.presence_add(self.key(group), list(entries.values()), self.ttl)
