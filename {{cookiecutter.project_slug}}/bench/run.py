"""`python -m bench`: run each scenario with the same load generators, then print the figures.

For each scenario: start its servers, connect the publisher, note the servers' memory, connect the other
clients and note it again once they are idle, then run two phases in which the publisher sends messages to
the room, flat out and then paced, while every client records what arrives. Each run (scenario and phase)
prints one JSON line on stdout; progress and the tables go to stderr. With `--rounds R` the scenarios run R
times in turn (A, B, A, B...), each compared with its baseline of the same round (and with the scenarios it
is also set against, if they ran), and the medians close the report: on a busy machine only ratios measured
side by side mean something.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import sys
import tempfile
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack
from dataclasses import asdict, dataclass
from pathlib import Path
from time import perf_counter

from . import profiling
from .driver import Generator, call_all
from .loadgen import raise_open_files_limit
from .report import (
    RunFigures,
    median_ratio_table,
    percentile,
    proxy_ratio_table,
    ratio_table,
    saturation_note,
    table,
)
from .scenarios import SCENARIOS, RunConfig, Scenario
from .servers import cpu_seconds, rss_bytes, tree_cpu_seconds

WARM_UP_MESSAGES = 5
LOG_TAIL_LINES = 30


@dataclass(frozen=True)
class Plan:
    """What the clients do, the same in every scenario."""

    messages: int
    paced_messages: int
    rate: float
    size: int
    window: int
    """Flat out, the publisher keeps this many messages in flight: sent, and not yet back to it."""
    compression: bool
    client: str
    """The load generators' WebSocket library: `picows`, or `websockets` (which can offer compression)."""
    connect_concurrency: int
    settle_seconds: float
    """Clients are idle once nothing arrived for this long (the service announces every arrival)."""
    quiet_seconds: float
    """A phase ends early, with losses, once no message of it arrived for this long."""
    profile_dir: Path | None


@dataclass(frozen=True)
class PhaseOutcome:
    expected: int
    delivered: int
    duplicates: int
    closes: dict[str, int]
    seconds: float
    latencies_ms: list[float]
    server_cpu_seconds: float
    proxy_cpu_seconds: float
    generator_cpu_percent: list[float]
    frames: int
    events: int


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a smoke run: 20 clients, a few messages")
    available = [name for name, scenario in SCENARIOS.items() if scenario.available and scenario.default]
    parser.add_argument(
        "--scenarios",
        default=",".join(available),
        help=f"comma-separated, of: {','.join(SCENARIOS)} (default: those whose tools are installed, "
        "but the -unsequenced ones)",
    )
    parser.add_argument("--clients", type=int, default=1000, help="N, the publisher included")
    parser.add_argument("--users", type=int, help="users the clients sign in as (default: clients / 10)")
    parser.add_argument("--messages", type=int, default=200, help="M, sent flat out")
    parser.add_argument("--paced-messages", type=int, default=200)
    parser.add_argument("--rate", type=float, default=20.0, help="messages per second when paced")
    parser.add_argument("--window", type=int, default=10, help="messages in flight when flat out")
    parser.add_argument("--size", type=int, default=100, help="bytes of message text")
    parser.add_argument("--generators", type=int, default=2, help="load generator processes")
    parser.add_argument(
        "--client",
        default="auto",
        choices=["auto", "picows", "websockets"],
        help="the clients' WebSocket library; auto is picows, or websockets with --compression",
    )
    parser.add_argument("--rounds", type=int, default=1, help="run the scenarios this many times in turn")
    parser.add_argument(
        "--ws",
        default="auto",
        choices=["auto", "websockets-sansio", "websockets", "wsproto"],
        help="uvicorn's WebSocket implementation; auto is what `serve` runs",
    )
    parser.add_argument(
        "--loop", default="auto", choices=["auto", "uvloop", "asyncio"], help="uvicorn's loop"
    )
    parser.add_argument(
        "--connect-concurrency", type=int, default=10, help="handshakes at once, per load generator"
    )
    parser.add_argument(
        "--compression",
        action="store_true",
        help="browser-like clients: they offer permessage-deflate, as Chromium does",
    )
    parser.add_argument(
        "--server-compression",
        default="off",
        choices=["off", "deflate"],
        help="the servers' WS_COMPRESSION: off declines permessage-deflate, deflate negotiates it",
    )
    parser.add_argument("--profile", type=Path, metavar="DIR", help="py-spy each scenario's first server")
    parser.add_argument("--redis-url", default=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0"))
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"),
        help="a server on which the bench may create (and then drop) a database",
    )
    args = parser.parse_args(argv)
    unknown = set(args.scenarios.split(",")) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenarios {sorted(unknown)}; choose among {list(SCENARIOS)}")
    if args.quick:
        args.clients, args.messages, args.paced_messages = 20, 20, 10
    if args.users is None:
        args.users = max(1, args.clients // 10)
    if args.client == "auto":
        args.client = "websockets" if args.compression else "picows"
    if args.compression and args.client == "picows":
        parser.error("picows does not offer permessage-deflate: --compression needs --client websockets")
    counts = (
        args.clients,
        args.users,
        args.messages,
        args.paced_messages,
        args.generators,
        args.window,
        args.rounds,
    )
    if min(counts) < 1 or args.users > args.clients:
        parser.error("every count must be at least 1, and --users at most --clients")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    plan = Plan(
        messages=args.messages,
        paced_messages=args.paced_messages,
        rate=args.rate,
        size=args.size,
        window=args.window,
        compression=args.compression,
        client=args.client,
        connect_concurrency=args.connect_concurrency,
        settle_seconds=0.3 if args.quick else 1.0,
        quiet_seconds=3.0 if args.quick else 10.0,
        profile_dir=args.profile,
    )
    scenarios = [SCENARIOS[name] for name in args.scenarios.split(",")]
    with tempfile.TemporaryDirectory(prefix="bench-") as log_dir:
        config = RunConfig(
            clients=args.clients,
            users=args.users,
            ws=args.ws,
            loop=args.loop,
            compression=args.server_compression,
            redis_url=args.redis_url,
            postgres_url=args.postgres_url,
            log_dir=Path(log_dir),
            run_id=secrets.token_hex(4),
        )
        runs = asyncio.run(bench(scenarios * args.rounds, plan, config, generators=args.generators))
    print(f"\n{table(runs)}", file=sys.stderr)
    baselines = {
        scenario.name: (scenario.baseline, *scenario.also_against)
        for scenario in scenarios
        if scenario.baseline
    }
    if ratios := ratio_table(runs, baselines):
        print(f"\n{ratios}", file=sys.stderr)
    if args.rounds > 1 and (medians := median_ratio_table(runs, baselines)):
        print(f"\n{medians}", file=sys.stderr)
    if proxies := proxy_ratio_table(runs, anchor="nginx"):
        print(f"\n{proxies}", file=sys.stderr)
    if note := saturation_note(runs):
        print(f"\n{note}", file=sys.stderr)
    inconsistent = [run for run in runs if not 0 <= run.delivered <= run.expected or run.duplicates]
    for run in inconsistent:
        print(f"inconsistent accounting in {run.scenario} {run.mode}: {run.json_line()}", file=sys.stderr)
    return 1 if inconsistent else 0


async def bench(
    scenarios: list[Scenario], plan: Plan, config: RunConfig, *, generators: int
) -> list[RunFigures]:
    raise_open_files_limit()
    if plan.profile_dir is not None:
        plan.profile_dir.mkdir(parents=True, exist_ok=True)
    started = [await Generator.start() for _ in range(generators)]
    runs: list[RunFigures] = []
    rounds: Counter[str] = Counter()
    try:
        for scenario in scenarios:
            rounds[scenario.name] += 1
            print(
                f"{scenario.name} (round {rounds[scenario.name]}): {scenario.summary},"
                f" {scenario.instances} process(es)",
                file=sys.stderr,
            )
            for run in await run_scenario(scenario, config, started, plan, rounds[scenario.name]):
                print(run.json_line(), flush=True)
                runs.append(run)
    finally:
        for generator in started:
            await generator.stop()
    return runs


async def run_scenario(
    scenario: Scenario, config: RunConfig, generators: list[Generator], plan: Plan, round_number: int
) -> list[RunFigures]:
    async with AsyncExitStack() as stack:
        started = perf_counter()
        deployment = await scenario.deploy(stack, config)
        print(
            f"  ready in {perf_counter() - started:.1f}s (servers started, users signed up)", file=sys.stderr
        )
        try:
            pids = [server.pid for server in deployment.servers]
            proxy_pids = [proxy.pid for proxy in deployment.proxies]
            publisher, *others = [asdict(endpoint) for endpoint in deployment.endpoints]
            options = {
                "concurrency": plan.connect_concurrency,
                "compression": plan.compression,
                "library": plan.client,
            }
            await generators[0].call("connect", clients=[publisher], **options)
            await run_phase(generators, pids, proxy_pids, "warm-up-1", WARM_UP_MESSAGES, plan.rate, plan)
            frames_before = await call_all(generators, "settle", quiet=plan.settle_seconds, within=60)
            memory_before = sum(map(rss_bytes, pids))
            cpu_before = sum(map(cpu_seconds, pids))
            name = f"{scenario.name}-connect" + (f"-{round_number}" if round_number > 1 else "")
            async with profiled(plan, pids[0], name):
                started = perf_counter()
                connected = await asyncio.gather(
                    *(
                        generator.call("connect", clients=others[index :: len(generators)], **options)
                        for index, generator in enumerate(generators)
                    )
                )
                connect_seconds = perf_counter() - started
                frames_after = await call_all(generators, "settle", quiet=plan.settle_seconds, within=300)
            handshakes_ms = sorted(latency for reply in connected for latency in reply["handshakes_ms"])
            # The servers' CPU from the first handshake until the room is quiet: presence frames included.
            connect_cpu_ms = (sum(map(cpu_seconds, pids)) - cpu_before) * 1000 / max(1, len(others))
            memory_growth = sum(map(rss_bytes, pids)) - memory_before
            filling_frames, filling_events = (
                sum(reply[key] for reply in frames_after) - sum(reply[key] for reply in frames_before)
                for key in ("frames", "events")
            )
            print(
                f"  {config.clients} clients in {connect_seconds:.1f}s:"
                f" {len(others) / connect_seconds:,.0f} handshakes/s,"
                f" p99 {percentile(handshakes_ms, 0.99):.0f} ms,"
                f" {connect_cpu_ms:.2f} ms of server CPU each,"
                f" {filling_frames:,} frames ({filling_events:,} events) received while the room filled",
                file=sys.stderr,
            )
            await run_phase(generators, pids, proxy_pids, "warm-up-2", WARM_UP_MESSAGES, plan.rate, plan)
            runs = []
            for mode, count, rate in (
                ("flat", plan.messages, None),
                ("paced", plan.paced_messages, plan.rate),
            ):
                name = f"{scenario.name}-{mode}" + (f"-{round_number}" if round_number > 1 else "")
                async with profiled(plan, pids[0], name):
                    outcome = await run_phase(generators, pids, proxy_pids, mode, count, rate, plan)
                run = RunFigures(
                    scenario=scenario.name,
                    round=round_number,
                    instances=scenario.instances,
                    ws=config.ws,
                    loop=config.loop,
                    mode=mode,
                    clients=config.clients,
                    users=config.users,
                    messages=count,
                    rate=rate,
                    expected=outcome.expected,
                    delivered=outcome.delivered,
                    duplicates=outcome.duplicates,
                    closes=outcome.closes,
                    seconds=round(outcome.seconds, 3),
                    deliveries_per_second=round(outcome.delivered / outcome.seconds, 1),
                    latency_p50_ms=percentile(outcome.latencies_ms, 0.50),
                    latency_p99_ms=percentile(outcome.latencies_ms, 0.99),
                    latency_max_ms=percentile(outcome.latencies_ms, 1.0),
                    rss_per_connection_kb=round(memory_growth / max(1, len(others)) / 1024, 1),
                    server_cpu_ms_per_1000=round(
                        outcome.server_cpu_seconds * 1e6 / max(1, outcome.delivered), 2
                    ),
                    generator_cpu_percent=outcome.generator_cpu_percent,
                    events_per_frame=round(outcome.events / max(1, outcome.frames), 2),
                    proxy_cpu_us_per_frame=(
                        # Each delivery is a frame relayed to a client; each message one relayed upstream.
                        round(outcome.proxy_cpu_seconds * 1e6 / max(1, outcome.delivered + count), 2)
                        if proxy_pids
                        else None
                    ),
                    connect_seconds=round(connect_seconds, 2),
                    handshakes_per_second=round(len(others) / connect_seconds, 1),
                    handshake_p99_ms=percentile(handshakes_ms, 0.99),
                )
                print(f"  {mode}: {run.deliveries_per_second:,.0f} deliveries/s", file=sys.stderr)
                runs.append(run)
            await call_all(generators, "disconnect")
            return runs
        except BaseException:
            for server in deployment.servers:
                tail = server.output().splitlines()[-LOG_TAIL_LINES:]
                print(f"--- {server.name} (pid {server.pid}) log tail:", *tail, sep="\n", file=sys.stderr)
            raise


async def run_phase(
    generators: list[Generator],
    server_pids: list[int],
    proxy_pids: list[int],
    name: str,
    count: int,
    rate: float | None,
    plan: Plan,
) -> PhaseOutcome:
    """The publisher sends `count` messages (flat out if `rate` is None); every client counts its arrivals."""
    await call_all(generators, "expect", phase=name, count=count)
    generator_pids = [generator.pid for generator in generators]
    cpu_before = [cpu_seconds(pid) for pid in server_pids + generator_pids]
    proxy_cpu_before = sum(map(tree_cpu_seconds, proxy_pids))
    started = perf_counter()
    sent = await generators[0].call(
        "publish",
        phase=name,
        count=count,
        rate=rate,
        window=plan.window,
        size=plan.size,
        quiet=plan.quiet_seconds,
    )
    if sent["closed"]:
        print(f"  the publisher was closed after {sent['sent']} messages: {sent['closed']}", file=sys.stderr)
    collected = await call_all(generators, "collect", quiet=plan.quiet_seconds, within=600)
    wall = perf_counter() - started
    cpu = [
        cpu_seconds(pid) - before
        for pid, before in zip(server_pids + generator_pids, cpu_before, strict=True)
    ]
    proxy_cpu = sum(map(tree_cpu_seconds, proxy_pids)) - proxy_cpu_before
    last_arrival = max((part["last_arrival"] or sent["first_send"]) for part in collected)
    closes: Counter[str] = Counter()
    for part in collected:
        closes.update(part["closes"])
    return PhaseOutcome(
        expected=sum(part["expected"] for part in collected),
        delivered=sum(part["delivered"] for part in collected),
        duplicates=sum(part["duplicates"] for part in collected),
        closes=dict(closes),
        seconds=max(last_arrival - sent["first_send"], 1e-9),
        latencies_ms=sorted(latency for part in collected for latency in part["latencies_ms"]),
        server_cpu_seconds=sum(cpu[: len(server_pids)]),
        proxy_cpu_seconds=proxy_cpu,
        generator_cpu_percent=[round(100 * seconds / wall) for seconds in cpu[len(server_pids) :]],
        frames=sum(part["frames"] for part in collected),
        events=sum(part["events"] for part in collected),
    )


@contextlib.asynccontextmanager
async def profiled(plan: Plan, pid: int, name: str) -> AsyncIterator[None]:
    if plan.profile_dir is None:
        yield
        return
    output = plan.profile_dir / f"{name}.txt"
    async with profiling.record(pid, output):
        yield
    print(profiling.summarize(output), file=sys.stderr)
