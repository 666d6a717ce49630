"""A Redis that stops answering without closing anything: every command fails within its timeout, and the
listener's health check takes the instance out of `/readyz` within seconds, and back once Redis answers.

Redis is reached through a proxy on loopback that, when stalled, keeps every connection open and accepts new
ones but forwards nothing, as a network partition or a hung server would.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from {{ cookiecutter.package_name }}.realtime import BrokerState, BrokerUnavailable, RedisBroker

from ..hardening.faults import CHUNK_BYTES, TcpProxy
from ..processes import ProcessGroup, wait_until

COMMAND_TIMEOUT = 1.0
HEALTH_CHECK_INTERVAL = 0.5


class StallingProxy(TcpProxy):
    """A `TcpProxy` that can also stop forwarding (`stall()`), keeping its connections, until `resume()`."""

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        super().__init__(upstream_host, upstream_port)
        self._forwarding = asyncio.Event()
        self._forwarding.set()

    def stall(self) -> None:
        self._loop.call_soon_threadsafe(self._forwarding.clear)

    def resume(self) -> None:
        self._loop.call_soon_threadsafe(self._forwarding.set)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while data := await reader.read(CHUNK_BYTES):
                await self._forwarding.wait()
                writer.write(data)
                await writer.drain()
        writer.transport.abort()
        self._writers.discard(writer)


@pytest.fixture
def proxied_redis_url(redis_url: str) -> Iterator[tuple[str, StallingProxy]]:
    parts = urlsplit(redis_url)
    with StallingProxy(parts.hostname or "127.0.0.1", parts.port or 6379) as proxy:
        yield f"redis://127.0.0.1:{proxy.port}{parts.path or '/0'}", proxy


async def test_a_cancellation_lost_under_a_command_is_raised_again_once_it_returns() -> None:
    """On Python 3.11, redis-py's `asyncio.wait_for` around a send can complete and drop the task's
    cancellation; the bound around each command raises it again, so a loop of commands stops when
    cancelled. The loss is played here as `wait_for` does it: the cancellation caught, the result returned."""
    broker = RedisBroker("redis://127.0.0.1:1/0", command_timeout=COMMAND_TIMEOUT)  # never connected
    commands = 0

    async def command_loop() -> None:
        nonlocal commands
        while True:
            async with broker._bounded():
                commands += 1
                if commands == 3:
                    task = asyncio.current_task()
                    assert task is not None
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await asyncio.sleep(0)
            await asyncio.sleep(0)

    looping = asyncio.create_task(command_loop())
    with pytest.raises(asyncio.CancelledError):
        async with asyncio.timeout(5):
            await looping
    assert commands == 3


async def test_commands_fail_within_the_timeout_and_the_listener_notices(
    proxied_redis_url: tuple[str, StallingProxy], broker_channel: str
) -> None:
    url, proxy = proxied_redis_url
    broker = RedisBroker(url, command_timeout=COMMAND_TIMEOUT, health_check_interval=HEALTH_CHECK_INTERVAL)
    await broker.connect()
    try:
        await broker.subscribe(f"{broker_channel}:probe")
        assert broker.state is BrokerState.CONNECTED
        await broker.publish(f"{broker_channel}:probe", b"before")

        proxy.stall()
        stalled_at = time.monotonic()
        for command in (
            broker.publish(f"{broker_channel}:probe", b"during"),
            broker.ping(),
            broker.presence_members(f"{broker_channel}:presence"),
        ):
            started = time.monotonic()
            with pytest.raises(BrokerUnavailable):
                await command
            took = time.monotonic() - started
            print(f"BrokerUnavailable after {took:.2f}s")
            assert took < COMMAND_TIMEOUT + 1.0

        async def reconnecting() -> bool:
            return broker.state is not BrokerState.CONNECTED

        await wait_until(reconnecting, within=HEALTH_CHECK_INTERVAL + 2 * COMMAND_TIMEOUT + 2.0)
        print(f"listener reported the stall after {time.monotonic() - stalled_at:.2f}s")

        proxy.resume()
        resumed_at = time.monotonic()

        async def connected() -> bool:
            return broker.state is BrokerState.CONNECTED

        await wait_until(connected, within=15.0)  # the reconnect backoff is at most 5 s
        print(f"listener connected again {time.monotonic() - resumed_at:.2f}s after the proxy resumed")
        await broker.publish(f"{broker_channel}:probe", b"after")
        message = await asyncio.wait_for(broker.get_message(), 5.0)
        assert message.data in (b"before", b"after")
    finally:
        await broker.disconnect()


async def test_publishes_waiting_behind_a_stalled_round_trip_fail_in_time_or_when_disconnected(
    proxied_redis_url: tuple[str, StallingProxy], broker_channel: str
) -> None:
    """A publish waits for the round trip under way, then its own: at most twice the command timeout. A
    disconnect fails at once what has not been sent (a broker with a long timeout shows it)."""
    url, proxy = proxied_redis_url
    broker = RedisBroker(url, command_timeout=COMMAND_TIMEOUT, health_check_interval=HEALTH_CHECK_INTERVAL)
    patient = RedisBroker(url, command_timeout=5 * COMMAND_TIMEOUT)
    channel = f"{broker_channel}:probe"
    await broker.connect()
    await patient.connect()
    try:
        for connected in (broker, patient):
            await connected.publish(channel, b"before")
        proxy.stall()
        under_way = asyncio.create_task(broker.publish(channel, b"stalled"))
        await asyncio.sleep(0.1)
        started = time.monotonic()
        behind = [broker.publish(channel, b"behind %d" % number) for number in range(5)]
        failures = await asyncio.gather(under_way, *behind, return_exceptions=True)
        took = time.monotonic() - started
        print(f"5 publishes behind a stalled round trip failed after {took:.2f}s")
        assert all(isinstance(failure, BrokerUnavailable) for failure in failures), failures
        assert took < 2 * COMMAND_TIMEOUT + 1.0

        waiting = [asyncio.create_task(patient.publish(channel, b"unsent %d" % n)) for n in range(5)]
        await asyncio.sleep(0.1)
        disconnected_at = time.monotonic()
        await patient.disconnect()
        failures = await asyncio.gather(*waiting, return_exceptions=True)
        assert all(isinstance(failure, BrokerUnavailable) for failure in failures), failures
        assert time.monotonic() - disconnected_at < patient.command_timeout / 2
    finally:
        proxy.resume()
        await broker.disconnect()
        await patient.disconnect()


@pytest.mark.slow
async def test_readyz_answers_503_while_redis_is_stalled_and_200_once_it_answers(
    proxied_redis_url: tuple[str, StallingProxy],
    broker_channel: str,
    process_group: ProcessGroup,
    tmp_path: Path,
) -> None:
    url, proxy = proxied_redis_url
    env = {
        "ENVIRONMENT": "test",
        "SECRET_KEY": secrets.token_urlsafe(32),
        "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'app.db'}",
        "BROKER_URL": url,
        "BROKER_CHANNEL": broker_channel,
        "BROKER_COMMAND_TIMEOUT_SECONDS": str(COMMAND_TIMEOUT),
        "BROKER_HEALTH_CHECK_SECONDS": str(HEALTH_CHECK_INTERVAL),
    }
    server = process_group.start_app("stalled", env=env)
    async with httpx.AsyncClient(base_url=server.base_url, timeout=10.0) as http:

        def ready_is(expected: int) -> Callable[[], Awaitable[bool]]:
            async def check() -> bool:
                return (await http.get("/readyz")).status_code == expected

            return check

        await wait_until(ready_is(200), within=30.0)
        proxy.stall()
        stalled_at = time.monotonic()
        await wait_until(ready_is(503), within=HEALTH_CHECK_INTERVAL + 2 * COMMAND_TIMEOUT + 3.0)
        print(f"/readyz answered 503 {time.monotonic() - stalled_at:.2f}s after Redis stalled")
        assert "broker" in (await http.get("/readyz")).json()["checks"]

        proxy.resume()
        resumed_at = time.monotonic()
        await wait_until(ready_is(200), within=15.0)
        print(f"/readyz answered 200 again {time.monotonic() - resumed_at:.2f}s after Redis answered")
