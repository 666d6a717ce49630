"""The rate limit of a consumer's incoming frames: a token bucket that a client can overdraw, then lose.

A frame takes a token; tokens come back at `per_second` up to `burst`. A frame without a token is refused:
dropped and answered with `rate_limited`. With `close_after`, a refused frame costs a token too, so the
client's balance goes negative and recovers only if it pauses; one that keeps on until it owes
`close_after` tokens has ignored every warning, and its connection is closed with 1008 (policy violation).
"""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass

__all__ = ["RateLimit", "TokenBucket", "Verdict"]


@dataclass(frozen=True, slots=True)
class RateLimit:
    """At most `per_second` frames a second on average, and `burst` in a row; `close_after`: see above."""

    per_second: float
    burst: int
    close_after: int | None = None

    def __post_init__(self) -> None:
        if self.per_second <= 0 or self.burst < 1:
            raise ValueError("a rate limit needs per_second > 0 and burst >= 1")
        if self.close_after is not None and self.close_after < 0:
            raise ValueError("close_after is a number of tokens owed, 0 or more")


class Verdict(enum.Enum):
    ALLOWED = "allowed"
    REFUSED = "refused"
    EXCEEDED = "exceeded"  # refused, and the client is to be closed


class TokenBucket:
    """The balance of one connection under a `RateLimit`."""

    def __init__(self, limit: RateLimit) -> None:
        self.limit = limit
        self.tokens = float(limit.burst)
        self.updated = time.monotonic()

    def take(self) -> Verdict:
        now = time.monotonic()
        self.tokens = min(self.limit.burst, self.tokens + (now - self.updated) * self.limit.per_second)
        self.updated = now
        if self.tokens >= 1:
            self.tokens -= 1
            return Verdict.ALLOWED
        if self.limit.close_after is None:
            return Verdict.REFUSED
        self.tokens -= 1
        return Verdict.REFUSED if self.tokens >= -self.limit.close_after else Verdict.EXCEEDED
