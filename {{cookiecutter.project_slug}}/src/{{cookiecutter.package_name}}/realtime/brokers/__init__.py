"""Brokers carry frames between the instances of a service: `memory://` in one process, Redis across many."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from .base import BrokerInterface, BrokerMessage, BrokerState, PresenceDelta
from .memory import InMemoryBroker
from .redis import RedisBroker

__all__ = [
    "BrokerInterface",
    "BrokerMessage",
    "BrokerState",
    "InMemoryBroker",
    "PresenceDelta",
    "RedisBroker",
    "create_broker",
]

REDIS_SCHEMES = frozenset({"redis", "rediss", "unix"})


def create_broker(url: str, **options: Any) -> BrokerInterface:
    """The broker for `url`: `memory://`, or `redis://`, `rediss://` and `unix://` (options go to Redis)."""
    scheme = urlsplit(url).scheme
    if scheme == "memory":
        if options:
            raise ValueError(f"the memory:// broker takes no options, got {sorted(options)}")
        return InMemoryBroker()
    if scheme in REDIS_SCHEMES:
        return RedisBroker(url, **options)
    raise ValueError(
        f"unsupported broker URL scheme {scheme!r}; use memory://, redis://, rediss:// or unix://"
    )
