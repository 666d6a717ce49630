"""Recoverable groups: each member gets every sequenced event of the group once, in order, while connected.

Pub/sub is at-most-once: a message published while an instance was not subscribed (the broker restarted,
or dropped a lagging subscriber) never reaches it. A group whose events carry a contiguous `seq` (1, 2,
3... assigned where they are stored) and whose consumer names a `HistoryProvider` for it closes that gap.

The seq of a live event is checked once per instance, not once per member: the group's `Stream` notes the
highest seq it heard, and its members that are in step (every seq up to that one was written or queued for
them, none is held back) get an event with the next seq as the plain frame, as any group's members do, and
one heard before not at all. A member that is not in step (it is joining, healing, or has a gap) checks
each event itself with its `Cursor`, the seq it last wrote to its client, when the event's turn to be
written comes (in its writer task, or in a round of writes: `outbox.Rounds`):

- on joining, reads the group's head after the group's traffic reaches the instance, then replays what
  follows `since` (or nothing without it), before any live event is written: nothing stored during the
  handshake is missed;
- lets a live event through when its seq is the next one, drops it when it was sent already, and keeps it
  aside when it is ahead of a gap; a gap still open after `gap_wait` seconds is filled from the provider;
- replays at most `max_replay` events: beyond that the client gets a `history.truncated` frame with the
  first seq that follows, and can page older ones from wherever the provider reads them;
- is in step again once it was sent the seq before a live event that comes in order, with nothing queued.

An event that skips seqs takes every member out of step, and so does any heal; `exclude` does not apply to
a member's sequenced events, which it gets all of.

The `Recovery` of the manager watches the broker: after it reconnected (and so resubscribed), and every
`heal_interval` seconds, it reads the head of each recoverable group with local members and heals every
member behind it (the periodic check waits for a head seen one interval earlier, so that it does not race
the live copy of a message just stored). This also covers the loss of a group's *last* message, which no
later event would reveal as a gap. A cursor holds one integer and at most `max_ahead` frames.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from pydantic import BaseModel, Field
from starlette import status

from .brokers import BrokerInterface, BrokerState
from .connection import Connection
from .fresh_reads import FreshReads
from .message import Frame, encode_frame
from .outbox import Filtered

__all__ = ["Cursor", "HistoryProvider", "HistoryTruncated", "Recovery", "RecoveryOptions", "Stream"]

logger = logging.getLogger(__name__)

REPLAY_PAGE_SIZE = 100
WATCH_TICK_SECONDS = 0.05


class HistoryProvider(Protocol):
    """Where a recoverable group's events are stored: each is a frame with an int `seq`, 1, 2, 3..."""

    async def head(self, group: str) -> int:
        """The seq of the group's latest stored event, 0 if there is none."""
        ...

    async def read(self, group: str, *, after: int, limit: int) -> Sequence[Frame]:
        """At most `limit` stored events of the group with a seq larger than `after`, in seq order."""
        ...


class HistoryTruncated(BaseModel):
    """More was missed than a replay sends: the events before `oldest_seq` were skipped (page them from
    the history if needed); what follows comes from `oldest_seq` on, then the live ones."""

    type: Literal["history.truncated"] = "history.truncated"
    oldest_seq: int = Field(description="The first seq sent after this frame.", examples=[1001])


@dataclass(frozen=True, slots=True)
class RecoveryOptions:
    """`max_replay`: most events replayed at once; `gap_wait`: seconds a gap may stay open before it is
    read from the provider; `heal_interval`: seconds between checks of the groups' heads;
    `max_ahead`: most live events a connection keeps aside while a gap is open."""

    max_replay: int = 1000
    gap_wait: float = 0.2
    heal_interval: float = 1.0
    max_ahead: int = 256

    def __post_init__(self) -> None:
        if self.max_replay < 1 or self.max_ahead < 1:
            raise ValueError("max_replay and max_ahead must be at least 1")
        if self.gap_wait < 0 or self.heal_interval <= 0:
            raise ValueError("gap_wait must be >= 0 and heal_interval > 0")


def seq_of(frame: Frame | Mapping[str, Any]) -> int | None:
    seq = frame.get("seq") if isinstance(frame, Mapping) else getattr(frame, "seq", None)
    return seq if isinstance(seq, int) and not isinstance(seq, bool) else None


class Cursor:
    """What one connection of a recoverable group was sent; all of it runs in the task writing the
    connection's frames (its writer, or a round of writes).

    `sent` is the seq last written, or queued ahead of anything else, to the client; while the cursor is in
    step with its stream it is not kept up to date (see `position`)."""

    def __init__(self, stream: Stream, connection: Connection) -> None:
        self.stream = stream
        self.connection = connection
        self.sent: int | None = None  # None until `start` has read the head
        self._ahead: dict[int, str] = {}
        self._gap_timer: asyncio.TimerHandle | None = None
        self._heal_queued = False

    @property
    def group(self) -> str:
        return self.stream.group

    @property
    def provider(self) -> HistoryProvider:
        return self.stream.provider

    @property
    def recovery(self) -> Recovery:
        return self.stream.recovery

    @property
    def options(self) -> RecoveryOptions:
        return self.recovery.options

    @property
    def position(self) -> int | None:
        """The seq last written or queued for the client."""
        return self.stream.last if self.connection in self.stream.in_step else self.sent

    def can_step(self, seq: int) -> bool:
        """Whether the live event `seq` is the next this client gets: it was sent the one before, holds
        nothing back, and has nothing queued or being written (a replay included)."""
        return self.sent == seq - 1 and not self._ahead and not self._heal_queued and self.connection.idle

    def step(self) -> None:
        """From now on the stream delivers to this connection (see the module)."""
        self._cancel_gap_timer()
        self.stream.in_step.add(self.connection)

    def leave_step(self) -> None:
        """Check each event again from here: every seq up to the stream's last one was written or queued."""
        if self.connection in self.stream.in_step:
            self.stream.in_step.discard(self.connection)
            self.sent = self.stream.last

    def _start_gap_timer(self) -> None:
        """Heal in `gap_wait` seconds, unless that timer runs already: what is held back waits that long."""
        if self._gap_timer is None:
            self._gap_timer = asyncio.get_running_loop().call_later(self.options.gap_wait, self.request_heal)

    def _cancel_gap_timer(self) -> None:
        if self._gap_timer is not None:
            self._gap_timer.cancel()
            self._gap_timer = None

    def accept(self, event: Mapping[str, Any], frame: str) -> bool:
        """The event filter of the group's sequenced events out of step: True to write this live one now."""
        seq = seq_of(event)
        if seq is None:
            return True
        if self.sent is not None and seq <= self.sent:
            return False
        if self.sent is not None and seq == self.sent + 1:
            self.sent = seq
            if self._ahead:
                self.request_heal()  # what was kept aside may follow on now
            return True
        if len(self._ahead) < self.options.max_ahead:
            self._ahead[seq] = frame
        self._start_gap_timer()
        return False

    async def start(self, since: int | None, joined: asyncio.Event) -> None:
        """Once the group's traffic reaches this instance, read the head and replay after `since`."""
        await joined.wait()
        try:
            head = await self.recovery.head(self.group, self.provider)
            self.sent = head if since is None else min(since, head)
            await self._replay(head)
        except Exception:
            # A partial replay would leave a gap; closed, the client reconnects and asks again.
            logger.exception("could not replay group %r after %s", self.group, since)
            await self.connection.close(status.WS_1011_INTERNAL_ERROR, "Could not read the history")
            return
        await self._write_ahead()

    def request_heal(self) -> None:
        """Queue a heal in the writer, behind what is queued already (once, however often asked)."""
        self.leave_step()
        self._cancel_gap_timer()
        if not self._heal_queued:
            self._heal_queued = self.connection.deliver(self.heal)

    async def heal(self) -> None:
        """Write what was kept aside that follows on, then read from the provider what is still missing."""
        self._heal_queued = False
        if self.sent is None:
            return
        await self._write_ahead()
        try:
            head = await self.recovery.head(self.group, self.provider)
            if head > self.sent:
                await self._replay(head)
                self.recovery.healed += 1
        except Exception as error:  # noqa: BLE001 - the history's own error (say, its database is down)
            logger.warning("could not heal group %r yet: %r", self.group, error)
            return  # the next check asks again
        await self._write_ahead()

    def close(self) -> None:
        self._cancel_gap_timer()
        self._ahead.clear()
        self.recovery.forget(self)

    async def _replay(self, head: int) -> None:
        assert self.sent is not None
        if head - self.sent > self.options.max_replay:
            oldest = head - self.options.max_replay + 1
            await self.connection.send_json(HistoryTruncated(oldest_seq=oldest))
            self.sent = oldest - 1
            self.recovery.truncated += 1
        while self.sent < head:
            page = await self.recovery.read(
                self.group, self.provider, after=self.sent, limit=min(REPLAY_PAGE_SIZE, head - self.sent)
            )
            for seq, frame in page:
                if seq <= self.sent:
                    continue
                await self.connection.send_text(frame)
                self.sent = seq
            if not page:
                break
        self._ahead = {seq: frame for seq, frame in self._ahead.items() if seq > self.sent}

    async def _write_ahead(self) -> None:
        assert self.sent is not None
        while (frame := self._ahead.pop(self.sent + 1, None)) is not None:
            await self.connection.send_text(frame)
            self.sent += 1
        self._ahead = {seq: frame for seq, frame in self._ahead.items() if seq > self.sent}
        if self._ahead:
            self._start_gap_timer()


class Stream:
    """A recoverable group's sequenced events as this instance hears them, and its local cursors: the seq
    of each event is checked here once for all the members in step (see the module)."""

    def __init__(self, recovery: Recovery, group: str, provider: HistoryProvider, event_type: str) -> None:
        self.recovery = recovery
        self.group = group
        self.provider = provider
        self.event_type = event_type
        self.last: int | None = None
        """The highest seq heard: every member in step was sent all those up to it."""
        self.heard = 0
        """Sequenced events heard: while they flow, gaps show by themselves."""
        self.cursors: dict[Connection, Cursor] = {}
        self.in_step: set[Connection] = set()
        self.checked_head = 0
        self.checked_heard = 0

    def deliver(
        self,
        recipients: Iterable[Connection],
        frame: str,
        event: Mapping[str, Any],
        seq: int,
        others: list[Connection],
    ) -> int:
        """Queue a live event of seq `seq` for the members with a cursor, as a plain frame for those in
        step; the members without one are added to `others`. Returns how many it was queued for."""
        self.heard += 1
        last = self.last
        fresh = last is None or seq > last
        if fresh:
            if last is not None and seq > last + 1:
                for connection in list(self.in_step):  # a gap: each member fills it for itself
                    self.cursors[connection].leave_step()
            self.last = seq
        in_step, cursors = self.in_step, self.cursors
        queued = 0
        for connection in recipients:
            if connection in in_step:
                if fresh:
                    queued += connection.deliver(frame)
                continue
            cursor = cursors.get(connection)
            if cursor is None:
                others.append(connection)
            elif fresh and cursor.can_step(seq):
                cursor.step()
                queued += connection.deliver(frame)
            else:
                queued += connection.deliver(Filtered(frame, event, cursor.accept))
        return queued


class Recovery:
    """The streams of one manager's recoverable groups, and the task that heals their cursors after broker
    reconnects and while groups are quiet. It runs only while there are cursors.

    Reads of the history are shared by the cursors of a group that ask at once (`FreshReads`), and the
    latest events read are kept per group (at most `max_replay`), so that a fault healed by every member
    of a large group costs the history one read, not one per member. Stored events are taken never to
    change.
    """

    def __init__(self, broker: BrokerInterface, options: RecoveryOptions | None = None) -> None:
        self.broker = broker
        self.options = options or RecoveryOptions()
        self.healed = 0
        self.truncated = 0
        self.streams: dict[str, Stream] = {}
        """By group: those with local cursors. The manager's dispatcher hands them their events."""
        self._recent: dict[str, dict[int, str]] = {}  # by group: frames read lately, encoded, by seq
        self._heads: FreshReads[str, int] = FreshReads("history-head")
        self._pages: FreshReads[tuple[str, int, int], Sequence[Frame]] = FreshReads("history-page")
        self._task: asyncio.Task[None] | None = None

    async def head(self, group: str, provider: HistoryProvider) -> int:
        """The group's head, read from `provider` by one query for all the cursors asking at once."""
        return await self._heads.read(group, lambda: provider.head(group))

    async def read(
        self, group: str, provider: HistoryProvider, *, after: int, limit: int
    ) -> list[tuple[int, str]]:
        """The group's events after `after` with their seqs, encoded once for all the cursors: from those
        read lately when they are all there, else from `provider` (one query for the cursors asking the
        same at once)."""
        recent = self._recent.setdefault(group, {})
        wanted = range(after + 1, after + limit + 1)
        if all(seq in recent for seq in wanted):
            return [(seq, recent[seq]) for seq in wanted]
        page = await self._pages.read(
            (group, after, limit), lambda: provider.read(group, after=after, limit=limit)
        )
        found = []
        for frame in page:
            if (seq := seq_of(frame)) is not None:
                text = recent.get(seq)
                if text is None:
                    text = recent[seq] = encode_frame(frame)
                found.append((seq, text))
        if len(recent) > self.options.max_replay:
            for seq in sorted(recent)[: len(recent) - self.options.max_replay]:
                del recent[seq]
        return found

    def cursor(
        self, connection: Connection, group: str, provider: HistoryProvider, event_type: str
    ) -> Cursor:
        """A cursor of `connection` in `group`, whose sequenced events are those of type `event_type`."""
        stream = self.streams.get(group)
        if stream is None:
            stream = self.streams[group] = Stream(self, group, provider, event_type)
        elif stream.event_type != event_type:
            raise ValueError(f"the sequenced events of {group!r} are of type {stream.event_type!r}")
        if connection in stream.cursors:
            raise ValueError(f"{connection!r} already has a cursor in {group!r}")
        cursor = stream.cursors[connection] = Cursor(stream, connection)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._watch(), name="recoverable-groups")
        return cursor

    def forget(self, cursor: Cursor) -> None:
        stream = cursor.stream
        if stream.cursors.get(cursor.connection) is cursor:
            del stream.cursors[cursor.connection]
            stream.in_step.discard(cursor.connection)
        if not stream.cursors and self.streams.get(stream.group) is stream:
            del self.streams[stream.group]
            self._recent.pop(stream.group, None)
        if not self.streams and self._task is not None:
            self._task.cancel()
            self._task = None

    def heal_group(self, group: str) -> bool:
        """Heal the local members of `group` now (say, an event of it could not be published); False if
        it has none here."""
        stream = self.streams.get(group)
        cursors = list(stream.cursors.values()) if stream is not None else []
        for cursor in cursors:
            cursor.request_heal()
        return bool(cursors)

    async def check(self, *, settled: bool) -> None:
        """Read each group's head and heal the members behind it: all of them (`settled=False`, right
        after a reconnect), or (`settled=True`) those behind the head seen at the previous check, when the
        group is quiet (its head did not move since) or deaf (no live event reached it since, as while the
        broker is down). While live events flow, a lost one shows as a gap before the next: healing then
        would only race an instance that is behind the database (a busy listener) with reads of its own."""
        for group, stream in list(self.streams.items()):
            try:
                head = await self.head(group, stream.provider)
            except Exception as error:  # noqa: BLE001 - the history's own error; the next check tries again
                logger.warning("could not read the head of group %r: %r", group, error)
                continue
            previous, heard = stream.checked_head, stream.heard
            flowing = head != previous and heard != stream.checked_heard
            stream.checked_head, stream.checked_heard = head, heard
            if settled and flowing:
                continue
            behind = previous if settled else head
            for cursor in list(stream.cursors.values()):
                # In a periodic check, not one whose queue still holds frames: it is behind because its
                # client is, and what it lacks may well be queued.
                waiting = settled and cursor.connection.pending > 0
                position = cursor.position
                if position is not None and position < behind and not waiting:
                    cursor.request_heal()

    async def _watch(self) -> None:
        loop = asyncio.get_running_loop()
        reconnects = self.broker.reconnects
        was_connected = self.broker.state is BrokerState.CONNECTED
        next_check = loop.time() + self.options.heal_interval
        while True:
            await asyncio.sleep(WATCH_TICK_SECONDS)
            connected = self.broker.state is BrokerState.CONNECTED
            resubscribed = connected and (not was_connected or self.broker.reconnects != reconnects)
            reconnects, was_connected = self.broker.reconnects, connected
            if not resubscribed and loop.time() < next_check:
                continue
            try:
                await self.check(settled=not resubscribed)
            except Exception:  # the watcher must outlive any surprise
                logger.exception("could not check the recoverable groups")
            next_check = loop.time() + self.options.heal_interval
