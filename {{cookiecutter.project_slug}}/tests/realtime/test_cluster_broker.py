"""The Redis Cluster broker on a local cluster: sharding, wildcards across instances, failover, resharding."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis.asyncio

from {{ cookiecutter.package_name }}.realtime import (
    BrokerMessage,
    BrokerState,
    BrokerUnavailable,
    PresenceDelta,
    RedisClusterBroker,
)
from {{ cookiecutter.package_name }}.realtime.brokers.cluster_patterns import PATTERN_CHANNEL_PREFIX
from {{ cookiecutter.package_name }}.realtime.topics import escape_glob, filter_to_glob

from .cluster import LocalCluster, local_cluster
from .support import eventually

pytestmark = pytest.mark.slow


@pytest.fixture
async def brokers(
    redis_cluster: LocalCluster,
) -> AsyncIterator[tuple[RedisClusterBroker, RedisClusterBroker]]:
    """Two instances' brokers on the shared cluster, each given a different node to start from."""
    first = RedisClusterBroker(f"redis+cluster://127.0.0.1:{redis_cluster.ports[0]}")
    second = RedisClusterBroker(f"redis+cluster://127.0.0.1:{redis_cluster.ports[1]}")
    await first.connect()
    await second.connect()
    yield first, second
    await first.disconnect()
    await second.disconnect()


@pytest.fixture
def own_cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    """A cluster of the test's own, for the tests that kill a node or move a slot."""
    with local_cluster(tmp_path / "cluster") as cluster:
        yield cluster


async def next_message(broker: RedisClusterBroker, seconds: float = 5.0) -> BrokerMessage:
    async with asyncio.timeout(seconds):
        return await broker.get_message()


async def shard_channels(cluster: LocalCluster) -> dict[int, set[str]]:
    """The sharded channels each primary has subscribers for."""
    found = {}
    for port in cluster.primaries():
        node = redis.asyncio.Redis(host="127.0.0.1", port=port)
        try:
            found[port] = {name.decode() for name in await node.execute_command("PUBSUB", "SHARDCHANNELS")}
        finally:
            await node.aclose()
    return found


async def test_channels_spread_over_the_primaries_with_one_reader_each(
    brokers: tuple[RedisClusterBroker, RedisClusterBroker], broker_channel: str, redis_cluster: LocalCluster
) -> None:
    listener, publisher = brokers
    rooms = [f"{broker_channel}:group:room-{number}" for number in range(96)]
    await listener.subscribe(*rooms)
    subscribed = await shard_channels(redis_cluster)
    per_node = {port: len(channels & set(rooms)) for port, channels in subscribed.items()}
    assert sum(per_node.values()) == 96
    assert all(16 <= count <= 48 for count in per_node.values()), per_node
    assert len(listener._readers) == 3  # one pub/sub connection per primary, whatever the number of rooms
    # Opening the readers of more nodes is no loss of the connection.
    assert (listener.state, listener.reconnects) == (BrokerState.CONNECTED, 0)

    for room in rooms:
        await publisher.publish(room, room.encode())
    received = [await next_message(listener) for _ in rooms]
    assert sorted(message.channel for message in received) == sorted(rooms)
    assert all(message.data == message.channel.encode() for message in received)

    await listener.unsubscribe(*rooms)
    assert not set(rooms) & set().union(*(await shard_channels(redis_cluster)).values())


async def test_wildcards_reach_another_instance_and_exact_topics_stay_one_channel(
    brokers: tuple[RedisClusterBroker, RedisClusterBroker], broker_channel: str, redis_cluster: LocalCluster
) -> None:
    listener, publisher = brokers
    topic_prefix = f"{broker_channel}:topic:"
    wildcard = escape_glob(topic_prefix) + filter_to_glob("rooms/+/messages")
    own_topic = escape_glob(topic_prefix) + filter_to_glob("users/alice/notifications")
    await listener.psubscribe(wildcard, own_topic)

    subscribed = set().union(*(await shard_channels(redis_cluster)).values())
    assert f"{topic_prefix}users/alice/notifications" in subscribed
    assert PATTERN_CHANNEL_PREFIX + wildcard in subscribed
    assert not any(PATTERN_CHANNEL_PREFIX in name and "alice" in name for name in subscribed)

    # The other instance hears of the new glob through the registry's change notice.
    await eventually(lambda: wildcard in publisher._registered_patterns, seconds=10)
    await publisher.publish(f"{topic_prefix}rooms/lobby/messages", b"hello")
    await publisher.publish(f"{topic_prefix}rooms/lobby/other", b"not for the filter")
    await publisher.publish(f"{topic_prefix}users/alice/notifications", b"for alice")
    first, second = await next_message(listener), await next_message(listener)
    assert (first.channel, first.pattern, first.data) == (
        f"{topic_prefix}rooms/lobby/messages",
        wildcard,
        b"hello",
    )
    assert (second.pattern, second.data) == (own_topic, b"for alice")
    with pytest.raises(TimeoutError):
        await next_message(listener, 0.3)

    await listener.punsubscribe(wildcard)
    await eventually(lambda: wildcard not in publisher._registered_patterns, seconds=10)
    # An instance that stops takes its globs out of the registry at once.
    await listener.psubscribe(wildcard)
    await eventually(lambda: wildcard in publisher._registered_patterns, seconds=10)
    await listener.disconnect()
    await eventually(lambda: wildcard not in publisher._registered_patterns, seconds=10)
    await listener.connect()
    await publisher.publish(f"{topic_prefix}rooms/lobby/messages", b"late")
    with pytest.raises(TimeoutError):
        await next_message(listener, 0.3)


async def test_a_message_matching_an_exact_and_wildcard_subscription_arrives_once_for_each(
    brokers: tuple[RedisClusterBroker, RedisClusterBroker], broker_channel: str
) -> None:
    listener, publisher = brokers
    channel = f"{broker_channel}:topic:a/b"
    wildcards = [escape_glob(f"{broker_channel}:topic:") + glob for glob in ("a/*", "*")]
    await listener.subscribe(channel)
    await listener.psubscribe(*wildcards)
    await eventually(lambda: set(wildcards) <= publisher._registered_patterns, seconds=10)
    await publisher.publish(channel, b"once")
    copies = [await next_message(listener) for _ in range(3)]
    assert sorted((message.pattern or "") for message in copies) == sorted(["", *wildcards])
    with pytest.raises(TimeoutError):
        await next_message(listener, 0.3)


async def test_presence_keys_share_a_slot_and_expire_with_their_latest_deadline(
    brokers: tuple[RedisClusterBroker, RedisClusterBroker], broker_channel: str, redis_cluster: LocalCluster
) -> None:
    first, second = brokers
    key = f"{broker_channel}:presence:lobby"
    joined = await first.presence_update(key, add={"c1": "alice"}, ttl=5)
    assert joined == PresenceDelta(frozenset({"alice"}), present=1)
    joined = await second.presence_update(key, add={"c2": "alice", "c3": "bob"}, ttl=30)
    assert joined == PresenceDelta(frozenset({"bob"}), present=2)
    assert await first.presence_members(key) == {"alice", "bob"}
    tagged = "{" + key + "}"  # the hash tag that puts both keys in one slot
    entries, members = f"{tagged}:entries", f"{tagged}:members"
    assert redis_cluster.keyslot(entries) == redis_cluster.keyslot(members)
    node = redis.asyncio.Redis(host="127.0.0.1", port=redis_cluster.owner(redis_cluster.keyslot(entries)))
    try:
        for name in (entries, members):
            assert 20_000 < await node.pttl(name) <= 30_000
    finally:
        await node.aclose()


async def test_an_unreachable_cluster_is_reported_and_sending_raises_broker_unavailable() -> None:
    broker = RedisClusterBroker("redis+cluster://127.0.0.1:1", reconnect_delay=0.05)
    await broker.connect()
    try:
        assert broker.state is BrokerState.RECONNECTING
        assert broker.last_error is not None
        await broker.subscribe("somewhere")
        await broker.psubscribe("some*")
        for command in (
            broker.ping(),
            broker.publish("somewhere", b"lost"),
            broker.presence_update("somewhere", add={"c1": "alice"}, ttl=1),
        ):
            with pytest.raises(BrokerUnavailable, match="Redis Cluster cannot be reached"):
                await command
    finally:
        await broker.disconnect()
    assert broker.state is BrokerState.DISCONNECTED


class Traffic:
    """Numbered messages published to each channel every few milliseconds, and what came back.

    The publisher stops when told, not by cancellation: on Python 3.11, `asyncio.wait_for` (which redis-py
    uses to send a command) returns the result of a send that completed as the task was cancelled, and the
    cancellation is lost, so a cancelled publishing loop could go on for ever."""

    def __init__(
        self, publisher: RedisClusterBroker, listener: RedisClusterBroker, channels: list[str]
    ) -> None:
        self.publisher, self.listener, self.channels = publisher, listener, channels
        self.sent: dict[str, list[tuple[int, float]]] = defaultdict(list)
        self.received: dict[str, dict[int, float]] = defaultdict(dict)
        self.refused = 0
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> Traffic:
        self._tasks = [asyncio.create_task(self._publish()), asyncio.create_task(self._receive())]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._stop.set()
        await asyncio.gather(self._tasks[0], return_exceptions=True)
        await asyncio.sleep(0.5)  # what is in flight arrives
        self._tasks[1].cancel()
        await asyncio.gather(self._tasks[1], return_exceptions=True)

    async def _publish(self) -> None:
        number = 0
        while not self._stop.is_set():
            number += 1
            for channel in self.channels:
                try:
                    await self.publisher.publish(channel, b"%d" % number)
                except BrokerUnavailable:
                    self.refused += 1
                    continue
                self.sent[channel].append((number, time.monotonic()))
            await asyncio.sleep(0.02)

    async def _receive(self) -> None:
        while True:
            message = await self.listener.get_message()
            self.received[message.channel][int(message.data)] = time.monotonic()

    def resumed_after(self, channel: str, moment: float) -> float | None:
        """When the first message published after `moment` on `channel` was received."""
        received = self.received[channel]
        later = [
            received[number] for number, sent in self.sent[channel] if sent > moment and number in received
        ]
        return min(later) if later else None

    def longest_silence(self, channel: str) -> float:
        """The longest time between two arrivals on `channel`, in seconds."""
        arrivals = sorted(self.received[channel].values())
        return max((later - earlier for earlier, later in itertools.pairwise(arrivals)), default=0.0)

    def lost(self) -> int:
        return sum(
            1
            for channel in self.channels
            for number, _ in self.sent[channel]
            if number not in self.received[channel]
        )


def channels_on(cluster: LocalCluster, prefix: str, port: int, count: int) -> list[str]:
    found = []
    for number in range(10_000):
        name = f"{prefix}:group:room-{number}"
        if cluster.owner(cluster.keyslot(name)) == port:
            found.append(name)
            if len(found) == count:
                return found
    raise LookupError("no channel found on the node")


async def test_delivery_resumes_after_a_primary_is_killed_and_its_replica_takes_over(
    own_cluster: LocalCluster, broker_channel: str
) -> None:
    victim, survivor = own_cluster.primaries()[:2]
    doomed = channels_on(own_cluster, broker_channel, victim, 4)
    spared = channels_on(own_cluster, broker_channel, survivor, 2)
    listener = RedisClusterBroker(f"redis+cluster://127.0.0.1:{survivor}", reconnect_delay=0.05)
    publisher = RedisClusterBroker(f"redis+cluster://127.0.0.1:{survivor}", reconnect_delay=0.05)
    await listener.connect()
    await publisher.connect()
    try:
        await listener.subscribe(*doomed, *spared)
        async with Traffic(publisher, listener, doomed + spared) as traffic:
            await eventually(lambda: all(traffic.received[channel] for channel in doomed + spared))
            killed_at = time.monotonic()
            await asyncio.to_thread(own_cluster.kill, victim)
            promoted_at = time.monotonic()
            await eventually(lambda: all(traffic.resumed_after(c, promoted_at) for c in doomed), seconds=20)
            resumed = max(traffic.resumed_after(channel, killed_at) or 0.0 for channel in doomed)
            await eventually(lambda: listener.state is BrokerState.CONNECTED, seconds=10)
            recovered_at = time.monotonic()
            await eventually(lambda: all(traffic.resumed_after(c, recovered_at) for c in doomed + spared))
        print(
            f"\nfailover: replica promoted {promoted_at - killed_at:.2f}s after SIGKILL, delivery resumed "
            f"{resumed - killed_at:.2f}s after SIGKILL (longest silence on a channel of the killed node "
            f"{max(traffic.longest_silence(channel) for channel in doomed):.2f}s); "
            f"{traffic.lost()} message(s) lost, {traffic.refused} refused"
        )
        assert listener.reconnects >= 1
        late = [
            (channel, number)
            for channel in doomed + spared
            for number, sent in traffic.sent[channel]
            if sent > recovered_at and number not in traffic.received[channel]
        ]
        assert late == []
        placed = await shard_channels(own_cluster)
        assert all(any(channel in names for names in placed.values()) for channel in doomed)
    finally:
        await listener.disconnect()
        await publisher.disconnect()


async def test_delivery_resumes_when_a_live_channels_slot_moves_to_another_primary(
    own_cluster: LocalCluster, broker_channel: str
) -> None:
    source, destination = own_cluster.primaries()[:2]
    moving = channels_on(own_cluster, broker_channel, source, 1)[0]
    staying = channels_on(own_cluster, broker_channel, source, 2)[1]
    slot = own_cluster.keyslot(moving)
    listener = RedisClusterBroker(f"redis+cluster://127.0.0.1:{destination}", reconnect_delay=0.05)
    publisher = RedisClusterBroker(f"redis+cluster://127.0.0.1:{source}", reconnect_delay=0.05)
    await listener.connect()
    await publisher.connect()
    try:
        await listener.subscribe(moving, staying)
        async with Traffic(publisher, listener, [moving, staying]) as traffic:
            await eventually(lambda: all(traffic.received[channel] for channel in (moving, staying)))
            started = time.monotonic()
            await asyncio.to_thread(own_cluster.move_slot, slot, destination)
            moved_at = time.monotonic()
            await eventually(lambda: traffic.resumed_after(moving, moved_at) is not None, seconds=20)
            # The channel that stayed is heard after the move too (its node's reader carried on).
            await eventually(lambda: traffic.resumed_after(staying, moved_at) is not None, seconds=20)
            resumed = traffic.resumed_after(moving, started) or 0.0
            back = traffic.resumed_after(moving, moved_at) or 0.0  # heard again once the slot had moved
        print(
            f"\nreshard: slot {slot} moved in {moved_at - started:.2f}s, delivery resumed "
            f"{resumed - started:.2f}s after the move began (longest silence on its channel "
            f"{traffic.longest_silence(moving):.2f}s); {traffic.lost()} message(s) lost"
        )
        assert moving in (await shard_channels(own_cluster))[destination]
        late = [
            n for n, sent in traffic.sent[moving] if sent > back + 0.5 and n not in traffic.received[moving]
        ]
        assert late == []
    finally:
        await listener.disconnect()
        await publisher.disconnect()
