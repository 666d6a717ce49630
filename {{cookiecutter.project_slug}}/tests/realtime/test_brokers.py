"""The brokers behave alike: channels, patterns (one copy per matching pattern), presence with expiry.

The contract runs on `memory://`, on the real Redis, and on a local Redis Cluster (sharded pub/sub).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

import pytest
import redis.asyncio

from {{ cookiecutter.package_name }}.realtime import (
    BrokerError,
    BrokerInterface,
    BrokerMessage,
    BrokerState,
    BrokerUnavailable,
    InMemoryBroker,
    PresenceDelta,
    RedisBroker,
    RedisClusterBroker,
    create_broker,
)
from {{ cookiecutter.package_name }}.realtime.brokers.memory import glob_match
from {{ cookiecutter.package_name }}.realtime.topics import escape_glob, filter_to_glob

from .cluster import LocalCluster


@pytest.fixture(params=["memory", "redis", "cluster"])
def broker_url(request: pytest.FixtureRequest) -> str:
    if request.param == "memory":
        return "memory://"
    if request.param == "cluster":
        cluster: LocalCluster = request.getfixturevalue("redis_cluster")
        return cluster.url
    url: str = request.getfixturevalue("redis_url")
    return url


@pytest.fixture
async def broker(broker_url: str) -> AsyncIterator[BrokerInterface]:
    created = create_broker(broker_url)
    await created.connect()
    yield created
    await created.disconnect()


async def next_message(broker: BrokerInterface, seconds: float = 5.0) -> BrokerMessage:
    async with asyncio.timeout(seconds):
        return await broker.get_message()


async def assert_silent(broker: BrokerInterface, seconds: float = 0.3) -> None:
    with pytest.raises(TimeoutError):
        await next_message(broker, seconds)


async def test_a_subscribed_channel_receives_what_is_published(
    broker: BrokerInterface, broker_channel: str
) -> None:
    channel = f"{broker_channel}:news"
    await broker.subscribe(channel)
    assert broker.state is BrokerState.CONNECTED
    for number in range(20):
        await broker.publish(channel, b"item %d" % number)
    received = [await next_message(broker) for _ in range(20)]
    assert [message.data for message in received] == [b"item %d" % number for number in range(20)]
    assert {(message.channel, message.pattern) for message in received} == {(channel, None)}

    await broker.unsubscribe(channel)
    await broker.publish(channel, b"late")
    await assert_silent(broker)


async def test_publishes_made_at_once_arrive_in_the_order_they_were_made(
    broker: BrokerInterface, broker_channel: str
) -> None:
    """A room's stored batch is published all at once, each message awaited by a task of its own."""
    channels = [f"{broker_channel}:first", f"{broker_channel}:second"]
    await broker.subscribe(*channels)
    sent = [(channels[number % 2], b"item %d" % number) for number in range(200)]
    await asyncio.gather(*(broker.publish(channel, data) for channel, data in sent))
    received = [await next_message(broker) for _ in sent]
    for channel in channels:  # a cluster's channels live on different nodes, each read on its own
        assert [message.data for message in received if message.channel == channel] == [
            data for target, data in sent if target == channel
        ]


@pytest.mark.parametrize("broker_url", ["redis", "cluster"], indirect=True)
async def test_publishes_made_during_a_round_trip_go_together_in_the_next(
    broker: BrokerInterface, broker_channel: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert isinstance(broker, RedisBroker | RedisClusterBroker)
    round_trips: list[int] = []
    send_publishes = broker.send_publishes

    async def counted(publishes: Sequence[tuple[str, bytes]]) -> None:
        round_trips.append(len(publishes))
        await send_publishes(publishes)

    monkeypatch.setattr(broker, "send_publishes", counted)
    channel = f"{broker_channel}:burst"
    await broker.subscribe(channel)
    for number in range(3):
        await broker.publish(channel, b"alone %d" % number)
    assert round_trips == [1, 1, 1]
    await asyncio.gather(*(broker.publish(channel, b"item %d" % number) for number in range(300)))
    assert sum(round_trips[3:]) == 300
    assert len(round_trips) <= 5, round_trips  # the first alone, the rest in the round trip after it
    received = [await next_message(broker) for _ in range(303)]
    assert [message.data for message in received[3:]] == [b"item %d" % number for number in range(300)]


async def test_a_message_arrives_once_per_matching_pattern(
    broker: BrokerInterface, broker_channel: str
) -> None:
    prefix = escape_glob(broker_channel)
    await broker.psubscribe(f"{prefix}:t:a*", f"{prefix}:t:a/*", f"{prefix}:t:z*")
    await broker.publish(f"{broker_channel}:t:a/b", b"payload")
    first, second = await next_message(broker), await next_message(broker)
    assert {first.pattern, second.pattern} == {f"{prefix}:t:a*", f"{prefix}:t:a/*"}
    assert first.data == second.data == b"payload"
    await assert_silent(broker)

    await broker.punsubscribe(f"{prefix}:t:a*", f"{prefix}:t:a/*")
    await broker.publish(f"{broker_channel}:t:a/b", b"payload")
    await assert_silent(broker)


def joined(*members: str, present: int) -> PresenceDelta:
    return PresenceDelta(joined=frozenset(members), present=present)


def left(*members: str, present: int) -> PresenceDelta:
    return PresenceDelta(left=frozenset(members), present=present)


async def test_presence_updates_report_arrivals_departures_and_expiries_once(
    broker: BrokerInterface, broker_channel: str
) -> None:
    key = f"{broker_channel}:presence:lobby"

    async def update(
        add: dict[str, str] | None = None, remove: dict[str, str] | None = None, ttl: float = 30
    ) -> PresenceDelta:
        return await broker.presence_update(key, add=add, remove=remove, ttl=ttl)

    assert await update({"c1": "alice", "c2": "bob"}) == joined("alice", "bob", present=2)
    assert await update({"c3": "alice"}) == PresenceDelta(present=2)
    assert await update({"c4": "ghost", "c5": "back"}) == joined("ghost", "back", present=4)
    assert await broker.presence_members(key) == {"alice", "bob", "ghost", "back"}
    # The last refresh of ghost's and back's entries, and a third entry of alice's that expires as well.
    assert await update({"c4": "ghost", "c5": "back", "c6": "alice"}, ttl=0.2) == PresenceDelta(present=4)
    await asyncio.sleep(0.3)
    assert await broker.presence_members(key) == {"alice", "bob"}

    # The next update evicts what expired and says who that left absent; an entry added back is no change.
    assert await update({"c5": "back"}, remove={"c1": "alice"}) == left("ghost", present=3)
    assert await update() == PresenceDelta(present=3)
    assert await update(remove={"c3": "alice", "c9": "nobody"}) == left("alice", present=2)
    assert await update({"c2": "bob"}) == PresenceDelta(present=2)
    assert await broker.presence_members(key) == {"bob", "back"}
    assert await update(remove={"c2": "bob", "c5": "back"}) == left("bob", "back", present=0)
    assert await broker.presence_members(key) == set()
    assert await broker.presence_members(f"{broker_channel}:presence:other") == set()


async def test_redis_presence_keys_expire_with_their_latest_deadline(
    redis_url: str, broker_channel: str
) -> None:
    broker, admin = RedisBroker(redis_url), redis.asyncio.Redis.from_url(redis_url)
    await broker.connect()
    try:
        key = f"{broker_channel}:presence:lobby"
        await broker.presence_update(key, add={"c1": "alice"}, ttl=0.5)
        await broker.presence_update(key, add={"c2": "bob"}, ttl=30)
        await broker.presence_update(key, add={"c1": "alice"}, ttl=1)
        for suffix in (":entries", ":members"):
            assert 20_000 < await admin.pttl(key + suffix) <= 30_000
        with pytest.raises(ValueError, match="cannot contain ':'"):
            await broker.presence_update(key, add={"c:1": "alice"}, ttl=1)
    finally:
        await broker.disconnect()
        await admin.aclose()


def test_create_broker_chooses_by_scheme() -> None:
    assert isinstance(create_broker("memory://"), InMemoryBroker)
    for url in ("redis://127.0.0.1:6379/0", "rediss://example.org:6380", "unix:///run/redis.sock?db=1"):
        created = create_broker(url, client_name="svc")
        assert isinstance(created, RedisBroker)
        assert created.url == url
    cluster = create_broker("rediss+cluster://user:p%40ss@10.0.0.1:7000,[::1]:7001,node3/", client_name="svc")
    assert isinstance(cluster, RedisClusterBroker)
    assert cluster.startup_nodes == [("10.0.0.1", 7000), ("::1", 7001), ("node3", 6379)]
    assert cluster.options["ssl"] is True
    assert (cluster.options["username"], cluster.options["password"]) == ("user", "p@ss")
    with pytest.raises(ValueError, match="at least one node"):
        create_broker("redis+cluster:///")
    with_query = create_broker("redis+cluster://node1:7000/?client_name=chat&socket_timeout=2")
    assert isinstance(with_query, RedisClusterBroker)
    assert (with_query.options["client_name"], with_query.options["socket_timeout"]) == ("chat", 2.0)
    with pytest.raises(ValueError, match="only database 0"):
        create_broker("redis+cluster://node1:7000/3")
    with pytest.raises(ValueError, match="unsupported broker URL scheme 'amqp'"):
        create_broker("amqp://localhost")
    with pytest.raises(ValueError, match="takes no options"):
        create_broker("memory://", client_name="svc")


async def test_redis_agrees_with_the_local_glob_matcher(redis_url: str, broker_channel: str) -> None:
    broker = RedisBroker(redis_url)
    await broker.connect()
    try:
        odd_filter = "we*rd/+/[x]?\\"
        pattern = escape_glob(f"{broker_channel}:") + filter_to_glob(odd_filter)
        await broker.psubscribe(pattern)
        candidates = ["we*rd/1/[x]?\\", "weXrd/1/[x]?\\", "we*rd/1/x!\\", "we*rd//[x]?\\"]
        for topic in candidates:
            await broker.publish(f"{broker_channel}:{topic}", topic.encode())
        expected = [topic for topic in candidates if glob_match(pattern, f"{broker_channel}:{topic}")]
        assert expected == ["we*rd/1/[x]?\\", "we*rd//[x]?\\"]
        assert [(await next_message(broker)).data.decode() for _ in expected] == expected
        await assert_silent(broker)
    finally:
        await broker.disconnect()


async def test_a_message_published_after_subscribe_returns_is_received(
    redis_url: str, broker_channel: str
) -> None:
    listener, publisher = RedisBroker(redis_url), RedisBroker(redis_url)
    await listener.connect()
    await publisher.connect()
    try:
        for number in range(30):
            channel = f"{broker_channel}:fresh:{number}"
            await listener.subscribe(channel)
            await publisher.publish(channel, b"first")
            assert (await next_message(listener)).channel == channel
    finally:
        await listener.disconnect()
        await publisher.disconnect()


async def test_an_unreachable_redis_is_reported_and_sending_to_it_raises_broker_unavailable() -> None:
    broker = RedisBroker("redis://127.0.0.1:1/0", reconnect_delay=0.05, socket_connect_timeout=1)
    await broker.connect()
    try:
        assert broker.state is BrokerState.RECONNECTING
        assert broker.last_error is not None
        await broker.subscribe("somewhere")
        for command in (
            broker.ping(),
            broker.publish("somewhere", b"lost"),
            broker.presence_update("somewhere", add={"c1": "alice"}, ttl=1),
            broker.presence_members("somewhere"),
        ):
            with pytest.raises(BrokerUnavailable, match="Redis cannot be reached") as unavailable:
                await command
            assert isinstance(unavailable.value, BrokerError)
            assert isinstance(unavailable.value.__cause__, redis.asyncio.ConnectionError)
        together = [broker.publish("somewhere", b"lost %d" % number) for number in range(3)]
        failures = await asyncio.gather(*together, return_exceptions=True)
        for failure in failures:  # each its own error, with the cause
            assert isinstance(failure, BrokerUnavailable)
            assert isinstance(failure.__cause__, redis.asyncio.ConnectionError)
        assert len({id(failure) for failure in failures}) == 3
    finally:
        await broker.disconnect()
    assert broker.state is BrokerState.DISCONNECTED
