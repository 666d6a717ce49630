"""Who is in a group, across every instance: one expiring entry per connection in the broker.

Joins and leaves are atomic in the broker, so each arrival and departure is announced exactly once, and
the entries of an instance that dies expire. docs/RELIABILITY.md ("Presence across instances") says how
updates are batched, shared and healed.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from .brokers import BrokerInterface, PresenceDelta
from .connection import Connection
from .fresh_reads import FreshReads

__all__ = ["Presence", "PresenceChange"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class PresenceChange:
    """Members of `group` who arrived (`joined`) or went (`left`) without a `presence_join` or
    `presence_leave` saying so: see the module."""

    group: str
    joined: frozenset[str]
    left: frozenset[str]


@dataclass(eq=False, slots=True)
class _Change:
    """One connection's entry in a group going from `before`'s member to `after`'s (None: no entry).

    `outcome` is set to whether this change made its member arrive, whether it made them leave, and how
    many members the group had after the update (None if the broker does not say). What nobody will
    announce (`announced` is False, or the caller was cancelled) goes to `on_change`."""

    connection: Connection
    before: str | None
    after: str | None
    announced: bool
    outcome: asyncio.Future[tuple[bool, bool, int | None]] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


@dataclass(slots=True)
class _Batch:
    """The changes of one group for its next update; with `refreshed`, every local entry is pushed back."""

    changes: list[_Change] = field(default_factory=list)
    refreshed: asyncio.Future[None] | None = None

    def fail(self, error: Exception) -> None:
        """The update failed: every caller waiting for it hears why."""
        waiters: list[asyncio.Future[Any]] = [change.outcome for change in self.changes]
        if self.refreshed is not None:
            waiters.append(self.refreshed)
        for waiter in waiters:
            if not waiter.done():
                waiter.set_exception(error)


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
        self._waiting: dict[str, _Batch] = {}
        self._updating: dict[str, asyncio.Task[None]] = {}
        self._members: FreshReads[str, frozenset[str]] = FreshReads("presence-members")

    def key(self, group: str) -> str:
        return f"{self.prefix}:presence:{group}"

    async def join(self, group: str, connection: Connection, member: str) -> tuple[bool, int | None]:
        """Mark `connection` present in `group` as `member`: whether the member was absent before, and how
        many members the group has now (None if the broker does not say)."""
        entries = self._local.setdefault(group, {})
        previous = entries.get(connection)
        entries[connection] = member
        arrived, _, present = await self._change(group, _Change(connection, previous, member, announced=True))
        return arrived, present

    async def leave(self, group: str, connection: Connection) -> bool:
        """Forget `connection` in `group`; True when its member is now absent from every instance."""
        member = self._forget(group, connection)
        if member is None:
            return False
        _, left, _ = await self._change(group, _Change(connection, member, None, announced=True))
        return left

    async def leave_all(self, connection: Connection) -> None:
        """Forget `connection` in every group; members it leaves absent are reported as changes."""
        outcomes = []
        for group in [group for group, entries in self._local.items() if connection in entries]:
            member = self._forget(group, connection)
            if member is not None:
                outcomes.append(self._change(group, _Change(connection, member, None, announced=False)))
        for outcome in await asyncio.gather(*outcomes, return_exceptions=True):
            if isinstance(outcome, BaseException):
                raise outcome

    async def members(self, group: str) -> set[str]:
        """The members present in `group` on any instance."""
        return set(await self._members.read(group, functools.partial(self._read_members, group)))

    async def heartbeat(self) -> None:
        """Push back the deadlines of this instance's entries, and evict the expired ones of its groups."""
        for group in list(self._local):
            batch = self._waiting.setdefault(group, _Batch())
            if batch.refreshed is None:
                batch.refreshed = asyncio.get_running_loop().create_future()
            refreshed = batch.refreshed
            _keep_running(self._updating, group, self._send_batches)
            await refreshed

    async def beat_forever(self) -> None:
        while True:
            await asyncio.sleep(self.ttl / 3)
            try:
                await self.heartbeat()
            except Exception:
                logger.exception("could not refresh presence; entries of this instance may expire")

    async def aclose(self) -> None:
        """Wait for the updates and reads under way: the broker is about to be disconnected."""
        await asyncio.gather(*self._updating.values(), self._members.wait(), return_exceptions=True)

    def _forget(self, group: str, connection: Connection) -> str | None:
        entries = self._local.get(group, {})
        member = entries.pop(connection, None)
        if not entries:
            self._local.pop(group, None)
        return member

    def _change(self, group: str, change: _Change) -> asyncio.Future[tuple[bool, bool, int | None]]:
        self._waiting.setdefault(group, _Batch()).changes.append(change)
        _keep_running(self._updating, group, self._send_batches)
        return change.outcome

    async def _send_batches(self, group: str) -> None:
        """Send `group`'s batches one after the other, so that a heartbeat never adds back an entry whose
        leave overtook it, until none is waiting."""
        while (batch := self._waiting.pop(group, None)) is not None:
            await self._update(group, batch)

    async def _read_members(self, group: str) -> frozenset[str]:
        return frozenset(await self.broker.presence_members(self.key(group)))

    async def _update(self, group: str, batch: _Batch) -> None:
        # This instance alone writes its entries: after the update, the broker holds their local state.
        local = self._local.get(group, {})
        touched = dict.fromkeys(change.connection for change in batch.changes)
        if batch.refreshed is not None:
            touched.update(dict.fromkeys(local))
        add = {connection.uid: local[connection] for connection in touched if connection in local}
        written: dict[Connection, str | None] = {}
        for change in batch.changes:
            written.setdefault(change.connection, change.before)  # as the updates before this one left it
        remove = {
            connection.uid: member
            for connection, member in written.items()
            if member is not None and local.get(connection) != member
        }
        try:
            delta = await self.broker.presence_update(self.key(group), add=add, remove=remove, ttl=self.ttl)
        except Exception as error:  # noqa: BLE001 - whatever it is, the callers waiting for it are told
            batch.fail(error)
            return
        await self._settle(group, batch, delta)

    async def _settle(self, group: str, batch: _Batch, delta: PresenceDelta) -> None:
        """Tell each change's caller what it did, and `on_change` what no caller will announce."""
        first_joins: dict[str, _Change] = {}
        last_leaves: dict[str, _Change] = {}
        for change in batch.changes:
            if change.after is not None:
                first_joins.setdefault(change.after, change)
            elif change.before is not None:
                last_leaves[change.before] = change
        arrivals = {member: first_joins.get(member) for member in delta.joined}
        departures = {member: last_leaves.get(member) for member in delta.left}
        for change in batch.changes:
            if not change.outcome.done():
                arrived = change.after is not None and arrivals.get(change.after) is change
                departed = change.before is not None and departures.get(change.before) is change
                change.outcome.set_result((arrived, departed, delta.present))
        if batch.refreshed is not None and not batch.refreshed.done():
            batch.refreshed.set_result(None)
        joined, left = (
            frozenset(member for member, change in changes.items() if not _announces(change))
            for changes in (arrivals, departures)
        )
        if self.on_change is None or not (joined or left):
            return
        try:
            await self.on_change(PresenceChange(group, joined, left))
        except Exception:
            logger.exception("on_presence_change failed for %s in %r", sorted(joined | left), group)


def _announces(change: _Change | None) -> bool:
    """Whether a caller is told of `change`'s outcome, and so announces it."""
    return change is not None and change.announced and not change.outcome.cancelled()


def _keep_running(
    tasks: dict[str, asyncio.Task[None]], group: str, work: Callable[[str], Awaitable[None]]
) -> None:
    """Have `work(group)` run unless it is running already: it takes what is waiting until nothing is."""
    if group in tasks:
        return

    async def run() -> None:
        try:
            await work(group)
        finally:
            tasks.pop(group, None)

    task = asyncio.create_task(run(), name=f"presence {group}")
    if not task.done():  # an eager task may have finished already
        tasks[group] = task
