"""`python -m bench.cluster`: many rooms on a Redis Cluster, sharded against classic PUBLISH and one Redis.

The channel layer alone, without WebSockets: `--rooms` group channels, one listener per instance
(`--instances`) subscribed to every room, one publisher sending `--messages` round-robin over the rooms with
`--window` in flight. Three runs on the same load:

- `cluster-sharded`: `RedisClusterBroker` (SPUBLISH / SSUBSCRIBE) on `--cluster-url`;
- `cluster-classic`: plain PUBLISH / SUBSCRIBE on the same cluster, each listener on one node, the
  publisher on every node in turn: what a layer that ignores sharding does there;
- `single-redis`: `RedisBroker` on `--redis-url`.

For each: deliveries per second and latency percentiles (send to arrival, one clock), and for the cluster
runs each primary's share of the pub/sub work, read from `INFO commandstats` and `CLUSTER INFO` before and
after: the (S)PUBLISH commands it served plus the messages other nodes forwarded to it. Sharded, each
primary should do about 1/N of the work; classic, every node handles every message.

A local cluster for a try: six `redis-server --cluster-enabled yes --port P` and `redis-cli --cluster
create 127.0.0.1:P1 ... --cluster-replicas 1` (the tests' `tests/realtime/cluster.py` does this).
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import redis.asyncio
from redis.asyncio.cluster import ClusterNode, RedisCluster

from {{ cookiecutter.package_name }}.realtime import BrokerInterface, RedisBroker, RedisClusterBroker
from {{ cookiecutter.package_name }}.realtime.brokers.cluster import cluster_nodes

from .report import percentile

Publish = Callable[[str, bytes], Awaitable[object]]


@dataclass(frozen=True)
class Figures:
    run: str
    deliveries: int
    expected: int
    seconds: float
    p50_ms: float
    p99_ms: float
    shares: dict[str, float]

    def row(self) -> str:
        shares = " ".join(f"{node}={share:.0%}" for node, share in sorted(self.shares.items())) or "-"
        rate = self.deliveries / self.seconds if self.seconds else 0.0
        return (
            f"{self.run:<16} {rate:>12,.0f} {self.p50_ms:>8.2f} {self.p99_ms:>8.2f} "
            f"{self.expected - self.deliveries:>6}  {shares}"
        )


class Latencies:
    """Arrival minus send time of every message received, in milliseconds."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.values: list[float] = []
        self.done = asyncio.Event()

    def arrived(self, data: bytes) -> None:
        self.values.append((time.perf_counter_ns() - int(data)) / 1e6)
        if len(self.values) >= self.expected:
            self.done.set()


async def drive(
    publish: Publish, rooms: list[str], messages: int, window: int, latencies: Latencies
) -> float:
    """Send `messages` round-robin over `rooms`, `window` at a time; the seconds until all arrived."""
    started = time.perf_counter()
    semaphore = asyncio.Semaphore(window)

    async def send(number: int) -> None:
        async with semaphore:
            await publish(rooms[number % len(rooms)], b"%d" % time.perf_counter_ns())

    await asyncio.gather(*(send(number) for number in range(messages)))
    try:
        async with asyncio.timeout(10):
            await latencies.done.wait()
    except TimeoutError:
        pass
    return time.perf_counter() - started


async def pubsub_work(nodes: list[ClusterNode]) -> dict[str, int]:
    """Per primary: (S)PUBLISH commands served plus messages forwarded to it by other nodes."""
    work = {}
    for node in nodes:
        client = redis.asyncio.Redis(host=node.host, port=int(node.port))
        try:
            stats = await client.info("commandstats")
            fields = await client.cluster("INFO")  # parsed by redis-py into a dict
        finally:
            await client.aclose()
        calls = sum(stats.get(f"cmdstat_{name}", {}).get("calls", 0) for name in ("publish", "spublish"))
        forwarded = sum(
            int(fields.get(f"cluster_stats_messages_{kind}_received", 0))
            for kind in ("publish", "publishshard")
        )
        work[node.name] = calls + forwarded
    return work


async def measure(
    run: str,
    listeners: list[BrokerInterface],
    publisher: BrokerInterface,
    rooms: list[str],
    messages: int,
    window: int,
    primaries: list[ClusterNode],
) -> Figures:
    for listener in listeners:
        await listener.subscribe(*rooms)
    latencies = Latencies(messages * len(listeners))

    async def listen(listener: BrokerInterface) -> None:
        while True:
            latencies.arrived((await listener.get_message()).data)

    readers = [asyncio.create_task(listen(listener)) for listener in listeners]
    before = await pubsub_work(primaries)
    seconds = await drive(publisher.publish, rooms, messages, window, latencies)
    after = await pubsub_work(primaries)
    for reader in readers:
        reader.cancel()
    return figures(run, latencies, seconds, before, after, messages)


def figures(
    run: str,
    latencies: Latencies,
    seconds: float,
    before: dict[str, int],
    after: dict[str, int],
    messages: int,
) -> Figures:
    ordered = sorted(latencies.values)
    shares = {node: (after[node] - before[node]) / messages for node in after}
    return Figures(
        run,
        len(ordered),
        latencies.expected,
        seconds,
        percentile(ordered, 0.5),
        percentile(ordered, 0.99),
        shares,
    )


async def classic(
    url: str, rooms: list[str], instances: int, messages: int, window: int, primaries: list[ClusterNode]
) -> Figures:
    """Plain PUBLISH / SUBSCRIBE on the cluster: listeners on one node each, publishes on every node."""
    clients = [redis.asyncio.Redis(host=node.host, port=int(node.port)) for node in primaries]
    pubsubs = [clients[index % len(clients)].pubsub() for index in range(instances)]
    latencies = Latencies(messages * instances)
    try:
        for pubsub in pubsubs:
            await pubsub.subscribe(*rooms)

        async def listen(pubsub: redis.asyncio.client.PubSub) -> None:
            while True:
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                if message is not None:
                    latencies.arrived(message["data"])

        readers = [asyncio.create_task(listen(pubsub)) for pubsub in pubsubs]
        sent = 0

        async def publish(channel: str, data: bytes) -> object:
            nonlocal sent
            sent += 1
            return await clients[sent % len(clients)].publish(channel, data)

        before = await pubsub_work(primaries)
        seconds = await drive(publish, rooms, messages, window, latencies)
        after = await pubsub_work(primaries)
        for reader in readers:
            reader.cancel()
        return figures("cluster-classic", latencies, seconds, before, after, messages)
    finally:
        for pubsub in pubsubs:
            await pubsub.aclose()
        for client in clients:
            await client.aclose()


async def main_async(options: argparse.Namespace) -> None:
    prefix = f"bench-{secrets.token_hex(4)}"
    rooms = [f"{prefix}:group:room-{number}" for number in range(options.rooms)]
    startup, _ = cluster_nodes(options.cluster_url)
    probe = RedisCluster(startup_nodes=[ClusterNode(host, port) for host, port in startup])
    await probe.initialize()
    primaries = probe.get_primaries()
    await probe.aclose()
    rows: list[Figures] = []

    async def broker_run(run: str, url: str) -> None:
        brokers: list[BrokerInterface] = [
            RedisClusterBroker(url) if url == options.cluster_url else RedisBroker(url)
            for _ in range(options.instances + 1)
        ]
        for broker in brokers:
            await broker.connect()
        try:
            nodes = primaries if url == options.cluster_url else []
            rows.append(
                await measure(run, brokers[1:], brokers[0], rooms, options.messages, options.window, nodes)
            )
        finally:
            for broker in brokers:
                await broker.disconnect()
        print(f"{run}: done", file=sys.stderr)

    await broker_run("cluster-sharded", options.cluster_url)
    rows.append(
        await classic(
            options.cluster_url, rooms, options.instances, options.messages, options.window, primaries
        )
    )
    print("cluster-classic: done", file=sys.stderr)
    await broker_run("single-redis", options.redis_url)
    header = f"{'run':<16} {'deliveries/s':>12} {'p50 ms':>8} {'p99 ms':>8} {'lost':>6}"
    print(f"{header}  pub/sub work per primary")
    for row in rows:
        print(row.row())


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.cluster", description=__doc__.splitlines()[0])
    parser.add_argument("--cluster-url", required=True, help="redis+cluster://host:port[,host:port...]")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--rooms", type=int, default=96)
    parser.add_argument("--instances", type=int, default=2, help="listeners, each subscribed to every room")
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--window", type=int, default=64, help="messages in flight")
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
