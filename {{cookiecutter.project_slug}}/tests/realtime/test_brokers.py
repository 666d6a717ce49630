"""Both brokers behave alike: channels, patterns (one copy per matching pattern), presence with expiry."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import redis.asyncio

from {{ cookiecutter.package_name }}.realtime import (
    BrokerInterface,
    BrokerMessage,
    BrokerState,
    InMemoryBroker,
    RedisBroker,
    create_broker,
)
from {{ cookiecutter.package_name }}.realtime.brokers.memory import glob_match
from {{ cookiecutter.package_name }}.realtime.topics import escape_glob, filter_to_glob


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


async def test_presence_members_expire_after_their_ttl(broker: BrokerInterface, broker_channel: str) -> None:
    key = f"{broker_channel}:presence:lobby"
    await broker.presence_add(key, ["c1:alice", "c2:bob"], ttl=30)
    await broker.presence_add(key, ["c3:ghost"], ttl=0.2)
    assert sorted(await broker.presence_members(key)) == ["c1:alice", "c2:bob", "c3:ghost"]
    await asyncio.sleep(0.3)
    assert sorted(await broker.presence_members(key)) == ["c1:alice", "c2:bob"]
    await broker.presence_remove(key, ["c1:alice"])
    assert await broker.presence_members(key) == ["c2:bob"]
    assert await broker.presence_members(f"{broker_channel}:presence:other") == []


def test_create_broker_chooses_by_scheme() -> None:
    assert isinstance(create_broker("memory://"), InMemoryBroker)
    for url in ("redis://127.0.0.1:6379/0", "rediss://example.org:6380", "unix:///run/redis.sock?db=1"):
        created = create_broker(url, client_name="svc")
        assert isinstance(created, RedisBroker)
        assert created.url == url
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


async def test_an_unreachable_redis_is_reported_not_raised() -> None:
    broker = RedisBroker("redis://127.0.0.1:1/0", reconnect_delay=0.05, socket_connect_timeout=1)
    await broker.connect()
    try:
        assert broker.state is BrokerState.RECONNECTING
        assert broker.last_error is not None
        await broker.subscribe("somewhere")
        with pytest.raises(redis.asyncio.ConnectionError):
            await broker.ping()
    finally:
        await broker.disconnect()
    assert broker.state is BrokerState.DISCONNECTED
