"""Presence changes gathered per group for a short tick, then announced together.

Announcing each arrival as it happens costs a frame per connection and newcomer, so a room that 1,000
connections fill costs a million frames; gathered for a tick, it costs one frame per connection and tick.
Within a tick a member's last change wins: one who left and came back is announced as present. What the
frames look like is the app's (`send`); the engine keeps the ticks, and drops what is still pending when it
closes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING

from .exceptions import BrokerError

if TYPE_CHECKING:
    from .manager import WebSocketManager
    from .presence import PresenceChange

__all__ = ["PresenceTicks"]

logger = logging.getLogger(__name__)

SendChanges = Callable[["WebSocketManager", str, Mapping[str, bool]], Awaitable[None]]
"""Announces in a group the changes of one tick: member -> present (True) or gone (False)."""


class PresenceTicks:
    """The presence changes of the groups named `prefix...`, handed to `send` once per `tick` seconds."""

    def __init__(self, tick: float, send: SendChanges, *, prefix: str = "") -> None:
        self.tick = tick
        self.send = send
        self.prefix = prefix
        self._pending: dict[str, dict[str, bool]] = {}
        self._ticks: set[asyncio.Task[None]] = set()

    def announce(self, manager: WebSocketManager, group: str, member: str, *, present: bool) -> None:
        """Announce at the end of the group's current tick that `member` came (`present`) or went."""
        changes = self._pending.get(group)
        if changes is None:
            changes = self._pending[group] = {}
            tick = asyncio.create_task(self._send_later(manager, group), name=f"presence-tick {group}")
            self._ticks.add(tick)
            tick.add_done_callback(self._ticks.discard)
        changes.pop(member, None)
        changes[member] = present

    async def on_presence_change(self, manager: WebSocketManager, change: PresenceChange) -> None:
        """Announce the members who came or went without a connection of theirs saying so (those of an
        instance that died, or stalled and came back): the manager's `on_presence_change`."""
        if not change.group.startswith(self.prefix):
            return
        for member in sorted(change.left):
            self.announce(manager, change.group, member, present=False)
        for member in sorted(change.joined):
            self.announce(manager, change.group, member, present=True)

    async def aclose(self) -> None:
        """Drop the changes not announced yet: the manager is closing."""
        for tick in list(self._ticks):
            tick.cancel()
        await asyncio.gather(*self._ticks, return_exceptions=True)
        self._pending.clear()

    async def _send_later(self, manager: WebSocketManager, group: str) -> None:
        await asyncio.sleep(self.tick)
        changes = self._pending.pop(group)
        try:
            await self.send(manager, group, changes)
        except BrokerError as error:
            logger.warning("could not announce presence in %r: %r", group, error)
