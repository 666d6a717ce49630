"""Brokers carry frames between the instances of a service: `memory://` in one process, Redis across many
(`redis+cluster://` on a Redis Cluster, with sharded pub/sub)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from .base import BrokerInterface, BrokerMessage, BrokerState, PresenceDelta
from .cluster import CLUSTER_SCHEMES, RedisClusterBroker
from .memory import InMemoryBroker
from .redis import RedisBroker

__all__ = [
    "BrokerInterface",
    "BrokerMessage",
    "BrokerState",
    "InMemoryBroker",
    "PresenceDelta",
    "RedisBroker",
    "RedisClusterBroker",
    "create_broker",
]

REDIS_SCHEMES = frozenset({"redis", "rediss", "unix"})


def create_broker(url: str, **options: Any) -> BrokerInterface:
    """The broker for `url`: `memory://`, or `redis://`, `rediss://` and `unix://` (options go to Redis), or
    `redis+cluster://host1:port1,host2:port2` and `rediss+cluster://` (options go to `RedisCluster`)."""
    scheme = urlsplit(url).scheme
    if scheme == "memory":
        if options:
            raise ValueError(f"the memory:// broker takes no options, got {sorted(options)}")
        return InMemoryBroker()
    if scheme in REDIS_SCHEMES:
        return RedisBroker(url, **options)
    if scheme in CLUSTER_SCHEMES:
        return RedisClusterBroker(url, **options)
    raise ValueError(
        f"unsupported broker URL scheme {scheme!r}; use memory://, redis://, rediss://, unix://, "
        "redis+cluster:// or rediss+cluster://"
    )
