"""Redis Cluster with sharded pub/sub (`redis+cluster://host1:port1,host2:port2`, `rediss+cluster://`).

Classic `PUBLISH` on a cluster is copied to every node; `SPUBLISH` goes only to the shard that owns the
channel's slot, so pub/sub traffic spreads over the primaries as keys do. Each primary that owns a
subscribed channel's slot gets one pub/sub connection of this broker, read by a task of its own that
blocks on the socket (`_NodeReader`); no reader polls the nodes in turn. A topology task places every
channel on the primary of its slot, and places them again when a reader's connection is lost (a failover),
when Redis says a channel moved (`MOVED` on subscribe, or `sunsubscribe` when its slot migrates away), and
every `health_check_interval` in any case, also resending a subscribe that was never confirmed: no
subscription stays stuck. Readers reconnect with exponential backoff and jitter, like `RedisBroker`'s; the
broker is `connected` while the topology is known and every reader that carries channels is connected.

Sharded pub/sub has no patterns; `psubscribe` is built on exact channels and a registry shared by the
instances (see `cluster_patterns` and docs/CLUSTER.md). Commands go through redis-py's `RedisCluster`,
which follows `MOVED` itself; publishes go in order, together while a round trip is under way, as one
pipeline that sends each primary its part (`Publishes`); presence uses `RedisPresence` with hash tags, so
that both keys of a set share a slot.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import random
from collections import Counter
from collections.abc import Iterable
from typing import Any
from urllib.parse import unquote, urlsplit

from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.connection import parse_url
from redis.exceptions import ClusterDownError, RedisClusterException, RedisError, ResponseError, TryAgainError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from .base import BrokerMessage, BrokerState
from .cluster_patterns import Frame, RecentIds, glob_literal, pattern_channel
from .memory import glob_match
from .redis_commands import RedisCommands
from .redis_presence import RedisPresence

__all__ = ["RedisClusterBroker", "cluster_nodes"]

logger = logging.getLogger(__name__)

CLUSTER_SCHEMES = frozenset({"redis+cluster", "rediss+cluster"})
_FAILURES = (RedisError, RedisClusterException, OSError)
# Options of `RedisCluster` that a single node's client does not take.
_CLUSTER_ONLY_OPTIONS = frozenset(
    {
        "address_remap",
        "cluster_error_retry_attempts",
        "dynamic_startup_nodes",
        "load_balancing_strategy",
        "read_from_replicas",
        "reinitialize_steps",
        "require_full_coverage",
    }
)
_TARGETS_CACHED = 4096


def cluster_nodes(url: str) -> tuple[list[tuple[str, int]], dict[str, Any]]:
    """The startup nodes of a `redis+cluster://` or `rediss+cluster://` URL, and its connection options:
    credentials, TLS, and query options as in a `redis://` URL (`?ssl_cert_reqs=none&client_name=chat`).
    Any one reachable node is enough: the others are discovered."""
    parts = urlsplit(url)
    if parts.scheme not in CLUSTER_SCHEMES:
        raise ValueError(f"not a Redis Cluster URL: {parts.scheme!r}")
    credentials, _, hosts = parts.netloc.rpartition("@")
    query: dict[str, Any] = parse_url(f"redis://localhost/?{parts.query}")  # type: ignore[no-untyped-call]
    options = {name: value for name, value in query.items() if name not in ("host", "port")}
    if options.pop("db", 0) != 0 or parts.path.strip("/") not in ("", "0"):
        raise ValueError("a Redis Cluster has only database 0")
    if credentials:
        username, _, password = credentials.partition(":")
        options["username"] = unquote(username) or None
        options["password"] = unquote(password) or None
    if parts.scheme == "rediss+cluster":
        options["ssl"] = True
    nodes = []
    for address in filter(None, hosts.split(",")):
        node = urlsplit(f"//{address}")
        if not node.hostname:
            raise ValueError(f"a Redis Cluster URL names a node without a host: {address!r}")
        nodes.append((node.hostname, node.port or 6379))
    if not nodes:
        raise ValueError("a Redis Cluster URL must name at least one node: redis+cluster://host:port")
    return nodes, options


class _NodeReader:
    """One pub/sub connection to one primary, carrying the sharded channels of the slots it serves."""

    def __init__(self, broker: RedisClusterBroker, host: str, port: int) -> None:
        self.broker = broker
        self.name = f"{host}:{port}"
        self.channels: set[str] = set()
        self.confirmed: set[str] = set()
        self.pubsub: PubSub | None = None
        self.failing = False  # its last attempt to connect failed, or its connection was lost
        # The reader owns reconnection; redis-py retrying underneath would hide the loss from it.
        self.client = Redis(host=host, port=port, **{**broker.node_options, "retry": Retry(NoBackoff(), 0)})
        self.task = asyncio.create_task(self._run(), name=f"redis-cluster-reader-{self.name}")

    async def add(self, channel: str) -> None:
        self.channels.add(channel)
        if self.pubsub is not None:
            await self.send("SSUBSCRIBE", channel)

    async def discard(self, channel: str) -> None:
        self.channels.discard(channel)
        self.confirmed.discard(channel)
        if self.pubsub is not None:
            await self.send("SUNSUBSCRIBE", channel)

    async def send(self, command: str, channel: str) -> None:
        """Send a (un)subscribe; a lost connection is the reader's to notice and restore."""
        if self.pubsub is None:
            return
        try:
            await self.pubsub.execute_command(command, channel)
        except _FAILURES as error:
            logger.debug("%s %s on %s failed: %s", command, channel, self.name, error)

    async def close(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)
        await self._close_pubsub()
        await self.client.aclose()

    async def _open(self) -> None:
        pubsub = self.client.pubsub()
        try:
            await pubsub.ping()
            async with self.broker.lock:
                for channel in self.channels:
                    await pubsub.execute_command("SSUBSCRIBE", channel)
                self.pubsub = pubsub
        except BaseException:
            await pubsub.aclose()
            raise

    async def _close_pubsub(self) -> None:
        pubsub, self.pubsub = self.pubsub, None
        self.confirmed.clear()
        self.broker.release_waiters(self.channels)
        if pubsub is not None:
            await pubsub.aclose()

    async def _run(self) -> None:
        broker = self.broker
        delay = broker.reconnect_delay
        while True:
            if self.pubsub is None:
                try:
                    await self._open()
                except _FAILURES as error:
                    self.failing = True
                    broker.release_waiters(self.channels)
                    broker.reader_failed(self, error)
                    await asyncio.sleep(delay * random.uniform(0.5, 1.0))  # with jitter
                    delay = min(delay * 2, broker.max_reconnect_delay)
                    continue
                self.failing = False
                broker.reader_connected(self)
            delay = broker.reconnect_delay
            try:
                await self._read(self.pubsub)
            except _FAILURES as error:
                self.failing = True
                broker.reader_failed(self, error)
                logger.warning("Redis Cluster pub/sub connection to %s lost (%s)", self.name, error)
            except Exception as error:  # the reader must outlive any surprise, so it is logged and goes on
                self.failing = True
                broker.reader_failed(self, error)
                logger.exception("Redis Cluster pub/sub reader of %s failed; reconnecting", self.name)
            await self._close_pubsub()
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))

    async def _read(self, pubsub: PubSub | None) -> None:
        assert pubsub is not None
        interval = self.broker.health_check_interval
        awaiting_pong = False
        while True:
            try:
                raw = await pubsub.get_message(timeout=interval)
            except ResponseError as error:  # MOVED, CLUSTERDOWN... in answer to a subscribe
                logger.info("Redis Cluster node %s refused a subscription: %s", self.name, error)
                self.broker.topology_changed()
                continue
            if raw is None:
                if awaiting_pong:
                    raise RedisConnectionError(f"no answer to PING within {interval}s")
                await pubsub.ping()
                awaiting_pong = True
                continue
            awaiting_pong = False
            kind, channel = raw["type"], raw["channel"]
            if kind == "smessage":
                self.broker.received(channel.decode(), raw["data"])
            elif kind == "ssubscribe":
                name = channel.decode()
                if name in self.channels:
                    self.confirmed.add(name)
                self.broker.confirm(name)
            elif kind == "sunsubscribe" and channel.decode() in self.channels:
                # Not asked for: the slot migrated to another node, which must be told instead.
                self.confirmed.discard(channel.decode())
                self.broker.topology_changed()


class RedisClusterBroker(RedisCommands[RedisCluster]):
    """`options` go to `redis.asyncio.cluster.RedisCluster` and to each node's pub/sub client;
    `command_timeout` bounds every command (and each socket read and connect), as in `RedisBroker`.

    `pattern_registry` names the presence set of wildcard globs shared by every instance of the service
    (and by services sharing the cluster: the globs carry each service's channel prefix); an instance
    renews its globs' entries every third of `pattern_lease` seconds, so a dead instance's go away.
    """

    service = "Redis Cluster"
    publish_command = "SPUBLISH"
    unreachable = (
        RedisConnectionError,
        RedisTimeoutError,
        OSError,
        ClusterDownError,
        TryAgainError,
        RedisClusterException,
    )

    def __init__(
        self,
        url: str,
        *,
        command_timeout: float = 3.0,
        health_check_interval: float = 15.0,
        reconnect_delay: float = 0.1,
        max_reconnect_delay: float = 5.0,
        subscribe_timeout: float = 5.0,
        pattern_registry: str = "realtime:patterns",
        pattern_lease: float = 30.0,
        **options: Any,
    ) -> None:
        self.url = url
        self.startup_nodes, url_options = cluster_nodes(url)
        super().__init__(command_timeout)
        self.health_check_interval = health_check_interval
        self.reconnect_delay = reconnect_delay
        self.max_reconnect_delay = max_reconnect_delay
        self.subscribe_timeout = subscribe_timeout
        self.pattern_registry = pattern_registry
        self.pattern_lease = pattern_lease
        timeouts = {"socket_timeout": command_timeout, "socket_connect_timeout": command_timeout}
        self.options = {**timeouts, **url_options, **options, "decode_responses": False}
        self.node_options = {k: v for k, v in self.options.items() if k not in _CLUSTER_ONLY_OPTIONS}
        self.lock = asyncio.Lock()
        self._changes_channel = f"{pattern_registry}:changed"
        self._instance = os.urandom(8).hex()
        self._topology: RedisCluster | None = None
        self._readers: dict[str, _NodeReader] = {}
        self._placement: dict[str, _NodeReader] = {}
        self._wanted: Counter[str] = Counter()
        self._channels: set[str] = set()
        self._patterns: set[str] = set()
        self._registered_patterns: frozenset[str] = frozenset()
        self._targets: dict[str, tuple[str, ...]] = {}
        self._waiters: dict[str, list[asyncio.Future[None]]] = {}
        self._queue: asyncio.Queue[BrokerMessage] = asyncio.Queue()
        self._recent = RecentIds()
        self._topology_known = False
        self._topology_stale = asyncio.Event()
        self._patterns_stale = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._ever_connected = False

    async def connect(self) -> None:
        if self._client is not None:
            return
        startup = [ClusterNode(host, port) for host, port in self.startup_nodes]
        self._client = RedisCluster(startup_nodes=startup, **self.options)
        # The slot map the readers follow, refreshed by the topology task; a client of its own, which runs
        # no command, so that refreshing it never races with the command client's own refreshes.
        self._topology = RedisCluster(startup_nodes=startup, **self.options)
        self._presence = RedisPresence(self._client, hash_tags=True)
        self._state = BrokerState.RECONNECTING
        try:
            await self._topology.initialize()
            self._topology_known = True
        except _FAILURES as error:
            self._record_failure(error)
            logger.warning("Redis Cluster is unreachable (%s); retrying in the background", self._last_error)
        self._tasks = [
            asyncio.create_task(self._maintain_topology(), name="redis-cluster-topology"),
            asyncio.create_task(self._maintain_patterns(), name="redis-cluster-patterns"),
        ]
        async with self.lock:
            waiters = await self._want([self._changes_channel])
        await self._await_confirmations(waiters, "subscribe")

    async def disconnect(self) -> None:
        await self._publishes.aclose()
        wildcards = {pattern for pattern in self._patterns if glob_literal(pattern) is None}
        if wildcards and self._client is not None:
            # Publishers stop sending to this instance's globs now rather than when their lease ends.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):
                    await self._register(remove=wildcards)
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        readers, self._readers = list(self._readers.values()), {}
        for reader in readers:
            await reader.close()
        for client in (self._client, self._topology):
            if client is not None:
                await client.aclose()
        self._client = self._topology = None
        self._presence = None
        self._placement.clear()
        self._wanted.clear()
        self._channels.clear()
        self._patterns.clear()
        self._targets.clear()
        self._registered_patterns = frozenset()
        self._topology_known = False
        self._state = BrokerState.DISCONNECTED

    async def subscribe(self, *channels: str) -> None:
        async with self.lock:
            added = [channel for channel in dict.fromkeys(channels) if channel not in self._channels]
            self._channels.update(added)
            waiters = await self._want(added)
        await self._await_confirmations(waiters, "subscribe")

    async def unsubscribe(self, *channels: str) -> None:
        async with self.lock:
            removed = [channel for channel in dict.fromkeys(channels) if channel in self._channels]
            self._channels.difference_update(removed)
            await self._unwant(removed)

    async def psubscribe(self, *patterns: str) -> None:
        async with self.lock:
            added = [pattern for pattern in dict.fromkeys(patterns) if pattern not in self._patterns]
            self._patterns.update(added)
            waiters = await self._want([self._sharded_channel(pattern) for pattern in added])
        await self._await_confirmations(waiters, "psubscribe")
        wildcards = {pattern for pattern in added if glob_literal(pattern) is None}
        if wildcards:
            self._targets.clear()
            await self._register(add=wildcards)

    async def punsubscribe(self, *patterns: str) -> None:
        async with self.lock:
            removed = [pattern for pattern in dict.fromkeys(patterns) if pattern in self._patterns]
            self._patterns.difference_update(removed)
            await self._unwant([self._sharded_channel(pattern) for pattern in removed])
        wildcards = {pattern for pattern in removed if glob_literal(pattern) is None}
        if wildcards:
            self._targets.clear()
            await self._register(remove=wildcards)

    async def publish(self, channel: str, data: bytes) -> None:
        """Publish `data` to `channel` and to the channel of every wildcard glob matching it, after the
        publishes made before it, and with those made meanwhile (see `Publishes`)."""
        frame = Frame.new(channel, data).encode()
        await self._publishes.publish([(target, frame) for target in self._publish_targets(channel)])

    async def get_message(self) -> BrokerMessage:
        return await self._queue.get()

    # What the node readers tell the broker.

    def received(self, channel: str, raw: bytes) -> None:
        if channel == self._changes_channel:
            self._patterns_stale.set()
            return
        try:
            frame = Frame.decode(raw)
        except ValueError as error:
            logger.warning("dropped a malformed message on sharded channel %r: %s", channel, error)
            return
        if not self._recent.first_time(frame.id):
            return  # a second copy, through another matching pattern's channel: the first stood for all
        if frame.channel in self._channels:
            self._queue.put_nowait(BrokerMessage(frame.channel, frame.data))
        for pattern in self._patterns:
            if glob_match(pattern, frame.channel):
                self._queue.put_nowait(BrokerMessage(frame.channel, frame.data, pattern))

    def confirm(self, channel: str) -> None:
        for waiter in self._waiters.pop(channel, ()):
            if not waiter.done():
                waiter.set_result(None)

    def release_waiters(self, channels: Iterable[str]) -> None:
        for channel in channels:
            self.confirm(channel)

    def reader_connected(self, reader: _NodeReader) -> None:
        logger.info(
            "Redis Cluster pub/sub connected to %s (%d channel(s))", reader.name, len(reader.channels)
        )
        self._update_state()

    def reader_failed(self, reader: _NodeReader, error: BaseException) -> None:
        self._record_failure(error)
        self.topology_changed()

    def topology_changed(self) -> None:
        self._topology_stale.set()

    # Placement of the sharded channels on the primaries.

    def _sharded_channel(self, pattern: str) -> str:
        literal = glob_literal(pattern)
        return literal if literal is not None else pattern_channel(pattern)

    async def _want(self, channels: Iterable[str]) -> list[asyncio.Future[None]]:
        """Count a holder for each channel; subscribe the new ones. Returns confirmations to wait for."""
        waiters = []
        for channel in channels:
            self._wanted[channel] += 1
            if self._wanted[channel] > 1:
                continue
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiters.setdefault(channel, []).append(waiter)
            waiters.append(waiter)
            await self._place(channel)
            reader = self._placement.get(channel)
            if reader is None or reader.failing:
                self.confirm(channel)  # it is subscribed when its node's reader (re)connects
        return waiters

    async def _unwant(self, channels: Iterable[str]) -> None:
        for channel in channels:
            self._wanted[channel] -= 1
            if self._wanted[channel] > 0:
                continue
            del self._wanted[channel]
            reader = self._placement.pop(channel, None)
            if reader is not None:
                await reader.discard(channel)

    async def _place(self, channel: str) -> None:
        """Put `channel` on the reader of the primary serving its slot, as far as the topology is known."""
        try:
            node = self._slot_map().get_node_from_key(channel)
        except _FAILURES:
            self.topology_changed()
            return
        if node is None:
            return
        reader = self._readers.get(node.name)
        if reader is None:
            reader = self._readers[node.name] = _NodeReader(self, node.host, int(node.port))
        current = self._placement.get(channel)
        if current is reader:
            return
        if current is not None:
            await current.discard(channel)
        self._placement[channel] = reader
        await reader.add(channel)

    async def _place_all(self) -> None:
        """Place every channel again, resend what was never confirmed, and drop the readers of nodes that
        no longer serve any channel of ours."""
        for channel in list(self._wanted):
            await self._place(channel)
        for reader in self._readers.values():
            for channel in reader.channels - reader.confirmed:
                await reader.send("SSUBSCRIBE", channel)
        idle = [name for name, reader in self._readers.items() if not reader.channels]
        for name in idle:
            await self._readers.pop(name).close()

    async def _maintain_topology(self) -> None:
        delay = self.reconnect_delay
        while True:
            # While a node's channels are not delivered, look often whether a replica took its slots over.
            interval = self.health_check_interval if self._state is BrokerState.CONNECTED else 0.2
            try:
                async with asyncio.timeout(interval):
                    await self._topology_stale.wait()
            except TimeoutError:
                pass
            self._topology_stale.clear()
            try:
                await self._slot_map().nodes_manager.initialize()
                self._topology_known = True
                async with self.lock:
                    await self._place_all()
                delay = self.reconnect_delay
            except _FAILURES as error:
                self._topology_known = False
                self._record_failure(error)
                self._topology_stale.set()
                await asyncio.sleep(delay * random.uniform(0.5, 1.0))  # with jitter
                delay = min(delay * 2, self.max_reconnect_delay)
            except Exception:  # the task must outlive any surprise, so it is logged and goes on
                logger.exception("Redis Cluster topology refresh failed")
                await asyncio.sleep(self.max_reconnect_delay)
            self._update_state()

    async def _await_confirmations(self, waiters: list[asyncio.Future[None]], action: str) -> None:
        if not waiters:
            return
        try:
            async with asyncio.timeout(self.subscribe_timeout):
                await asyncio.gather(*waiters)
        except TimeoutError:
            logger.warning("Redis Cluster did not confirm %s of %d name(s) in time", action, len(waiters))

    def _update_state(self) -> None:
        if self._client is None:
            return
        # A reader still opening its first connection is not a loss; one whose connection failed is.
        live = self._topology_known and not any(
            reader.failing for reader in self._readers.values() if reader.channels
        )
        if not live:
            self._state = BrokerState.RECONNECTING
        elif self._state is not BrokerState.CONNECTED:
            if self._ever_connected:
                self._reconnects += 1
                logger.info("Redis Cluster pub/sub restored; %d sharded channel(s)", len(self._wanted))
            self._ever_connected = True
            self._state = BrokerState.CONNECTED

    # The wildcard registry.

    def _publish_targets(self, channel: str) -> tuple[str, ...]:
        """The channel itself, and the channel of every wildcard glob held anywhere that matches it."""
        targets = self._targets.get(channel)
        if targets is None:
            wildcards = self._registered_patterns.union(
                pattern for pattern in self._patterns if glob_literal(pattern) is None
            )
            matching = sorted(pattern for pattern in wildcards if glob_match(pattern, channel))
            targets = (channel, *(pattern_channel(pattern) for pattern in matching))
            if len(self._targets) >= _TARGETS_CACHED:
                self._targets.clear()
            self._targets[channel] = targets
        return targets

    def _entry_id(self, pattern: str) -> str:
        return f"{self._instance}-{hashlib.blake2b(pattern.encode(), digest_size=8).hexdigest()}"

    async def _register(self, *, add: Iterable[str] = (), remove: Iterable[str] = ()) -> None:
        """Add or remove this instance's entries of wildcard globs; tell every instance if the set of
        globs held anywhere changed. A failure is retried by the next renewal."""
        try:
            delta = await self._presence_sets().update(
                self.pattern_registry,
                {self._entry_id(pattern): pattern for pattern in add},
                {self._entry_id(pattern): pattern for pattern in remove},
                self.pattern_lease,
            )
            if delta.joined or delta.left:
                await self._commands().spublish(self._changes_channel, b"")
        except _FAILURES as error:
            logger.warning(
                "could not update the wildcard registry (%s); retrying with the next renewal", error
            )

    async def _maintain_patterns(self) -> None:
        """Renew this instance's globs, and reload the globs held anywhere when told they changed, and at
        each renewal in any case."""
        while True:
            try:
                async with asyncio.timeout(self.pattern_lease / 3):
                    await self._patterns_stale.wait()
            except TimeoutError:
                await self._register(
                    add=[pattern for pattern in self._patterns if glob_literal(pattern) is None]
                )
            self._patterns_stale.clear()
            try:
                registered = frozenset(await self._presence_sets().members(self.pattern_registry))
            except _FAILURES as error:
                logger.debug("could not read the wildcard registry: %s", error)
                continue
            if registered != self._registered_patterns:
                self._registered_patterns = registered
                self._targets.clear()

    def _slot_map(self) -> RedisCluster:
        return self._connected(self._topology)
