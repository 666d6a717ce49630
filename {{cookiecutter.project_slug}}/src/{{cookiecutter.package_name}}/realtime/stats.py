"""What one manager counts as it works, for logs, metrics and tests: plain numbers, cheap to keep.

Nothing here knows of Prometheus; an exporter reads `Stats` when it is scraped.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

__all__ = ["FANOUT_BOUNDS", "FanoutSizes", "Stats"]

# Recipients of one broker message on one instance: a direct message, a small room, up to a broadcast.
FANOUT_BOUNDS = (0, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000)


@dataclass
class FanoutSizes:
    """A histogram of how many local connections each broker message of one kind was queued for.

    `buckets[i]` counts the messages with at most `FANOUT_BOUNDS[i]` recipients and more than the bound
    before it; the last bucket counts those above every bound. `total` is the sum of all recipients.
    """

    buckets: list[int] = field(default_factory=lambda: [0] * (len(FANOUT_BOUNDS) + 1))
    count: int = 0
    total: int = 0

    def observe(self, recipients: int) -> None:
        self.buckets[bisect.bisect_left(FANOUT_BOUNDS, recipients)] += 1
        self.count += 1
        self.total += recipients

    def cumulative(self) -> list[tuple[float, int]]:
        """(bound, messages with at most that many recipients), ending with infinity, as Prometheus has it."""
        running = 0
        pairs: list[tuple[float, int]] = []
        for bound, bucket in zip((*FANOUT_BOUNDS, float("inf")), self.buckets, strict=True):
            running += bucket
            pairs.append((bound, running))
        return pairs


@dataclass
class Stats:
    """Counters of one manager.

    `frames_encoded` counts JSON encodings of outgoing frames: one per send through the broker, whatever
    the number of recipients, plus one per frame sent to a single connection (replies, event methods).
    `fanout` has, by envelope kind (`broadcast`, `conn`, `group`, `topic`), the number of local connections
    each broker message was queued for; its totals are the frames delivered to outbound queues.
    `frames_dropped` counts frames that never reached a socket: sent to a connection already closing, or
    thrown away with the queue of a client too slow (closed with 1013) or gone.
    `delivery_errors` counts broker messages well formed but not delivered because the engine failed (a bug).
    `queue_high_water` is the most frames ever waiting at once in one connection's outbound queue.
    """

    broker_messages: int = 0
    malformed_broker_messages: int = 0
    slow_consumers_closed: int = 0
    handler_errors: int = 0
    delivery_errors: int = 0
    frames_encoded: int = 0
    frames_dropped: int = 0
    queue_high_water: int = 0
    fanout: dict[str, FanoutSizes] = field(default_factory=dict)

    def fanned_out(self, kind: str, recipients: int) -> None:
        sizes = self.fanout.get(kind)
        if sizes is None:
            sizes = self.fanout[kind] = FanoutSizes()
        sizes.observe(recipients)

    @property
    def frames_delivered(self) -> int:
        """Frames queued for local connections by the broker messages taken so far."""
        return sum(sizes.total for sizes in self.fanout.values())
