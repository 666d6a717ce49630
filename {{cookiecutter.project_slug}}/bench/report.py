"""The figures of one run (a scenario in one mode), as a JSON line and as rows of the terminal tables."""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass

import orjson

GENERATOR_SATURATED_PERCENT = 90
"""A load generator this busy may be what limits the run: its figures then measure the generator."""


def percentile(ordered: Sequence[float], fraction: float) -> float:
    """The nearest-rank percentile of values sorted in ascending order; NaN when there are none."""
    if not ordered:
        return math.nan
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


@dataclass(frozen=True)
class RunFigures:
    scenario: str
    round: int
    """Which time the scenario ran in this bench run (`--rounds`), from 1."""
    instances: int
    ws: str
    loop: str
    mode: str
    """`flat` (the publisher sends as fast as its socket takes) or `paced` (`rate` messages a second)."""
    clients: int
    users: int
    messages: int
    rate: float | None
    expected: int
    delivered: int
    duplicates: int
    closes: dict[str, int]
    """Close codes of the clients that a server closed during the run, and how many each."""
    seconds: float
    """From the first send to the last arrival."""
    deliveries_per_second: float
    latency_p50_ms: float
    latency_p99_ms: float
    latency_max_ms: float
    rss_per_connection_kb: float
    """Growth of the servers' resident memory from before the clients connected to once they were idle."""
    server_cpu_ms_per_1000: float
    """CPU time of the server processes (not Redis, not PostgreSQL) per 1000 deliveries."""
    generator_cpu_percent: list[float]
    """Each load generator's CPU use during the run, in percent of one core."""
    events_per_frame: float
    """Events the clients received per WebSocket frame: above 1 when the server batched them."""
    connect_seconds: float
    """The time for the N - 1 clients other than the publisher to connect, `--connect-concurrency` each
    load generator in flight: a reconnect storm when that is high."""
    handshakes_per_second: float
    handshake_p99_ms: float
    """From a client's TCP connect to the server's 101, authentication and room join included."""
    proxy_cpu_us_per_frame: float | None = None
    """CPU time of the proxy between clients and servers (all its processes) per frame it relayed."""

    @property
    def lost(self) -> int:
        return self.expected - self.delivered

    @property
    def generator_saturated(self) -> bool:
        return max(self.generator_cpu_percent, default=0) >= GENERATOR_SATURATED_PERCENT

    def json_line(self) -> str:
        extra = {"lost": self.lost, "generator_saturated": self.generator_saturated}
        return orjson.dumps({**asdict(self), **extra}).decode()


COLUMNS = (
    ("run", 22),
    ("deliveries/s", 12),
    ("p50 ms", 8),
    ("p99 ms", 8),
    ("max ms", 8),
    ("delivered/expected", 20),
    ("RSS KB/conn", 11),
    ("CPU ms/1k", 9),
    ("gen CPU %", 10),
    ("events/frame", 12),
    ("handshakes/s", 12),
    ("hs p99 ms", 9),
    ("proxy µs/frame", 14),
)


def table(runs: Sequence[RunFigures]) -> str:
    lines = [_row([name for name, _ in COLUMNS]), _row(["-" * width for _, width in COLUMNS])]
    for run in runs:
        cells = [
            f"{run.scenario} {run.mode}" + (f" #{run.round}" if run.round > 1 else ""),
            f"{run.deliveries_per_second:,.0f}",
            f"{run.latency_p50_ms:.1f}",
            f"{run.latency_p99_ms:.1f}",
            f"{run.latency_max_ms:.1f}",
            f"{run.delivered}/{run.expected}",
            f"{run.rss_per_connection_kb:.1f}",
            f"{run.server_cpu_ms_per_1000:.1f}",
            "/".join(f"{percent:.0f}" for percent in run.generator_cpu_percent)
            + ("!" if run.generator_saturated else ""),
            f"{run.events_per_frame:.2f}",
            f"{run.handshakes_per_second:,.0f}",
            f"{run.handshake_p99_ms:.0f}",
            "-" if run.proxy_cpu_us_per_frame is None else f"{run.proxy_cpu_us_per_frame:.1f}",
        ]
        lines.append(_row(cells))
    return "\n".join(lines)


def saturation_note(runs: Sequence[RunFigures]) -> str:
    """A warning naming the runs whose load generators were close to a full core, or nothing."""
    saturated = [f"{run.scenario} {run.mode}" for run in runs if run.generator_saturated]
    if not saturated:
        return ""
    return (
        f"! a load generator used {GENERATOR_SATURATED_PERCENT}% or more of a core in:"
        f" {', '.join(saturated)}; those figures may measure the generators: use more --generators"
    )


def _against_baselines(
    runs: Sequence[RunFigures], baselines: dict[str, tuple[str, ...]]
) -> Iterator[tuple[RunFigures, RunFigures]]:
    """Each run with each of its scenario's baselines that ran in the same mode and round."""
    by_key = {(run.scenario, run.mode, run.round): run for run in runs}
    for run in runs:
        for name in baselines.get(run.scenario, ()):
            if (baseline := by_key.get((name, run.mode, run.round))) is not None:
                yield run, baseline


def ratio_table(runs: Sequence[RunFigures], baselines: dict[str, tuple[str, ...]]) -> str:
    """Each scenario's figures divided by those of each of its baselines in the same mode and round."""
    rows = []
    for run, baseline in _against_baselines(runs, baselines):
        name = f"{run.scenario} / {baseline.scenario} {run.mode}"
        if run.round > 1:
            name += f" #{run.round}"
        rows.append(
            (
                name,
                f" {_ratio(run.deliveries_per_second, baseline.deliveries_per_second):>12}"
                f" {_ratio(run.latency_p99_ms, baseline.latency_p99_ms):>8}"
                f" {_ratio(run.rss_per_connection_kb, baseline.rss_per_connection_kb):>9}"
                f" {_ratio(run.server_cpu_ms_per_1000, baseline.server_cpu_ms_per_1000):>8}",
            )
        )
    header = ("ratio to baseline", f" {'deliveries/s':>12} {'p99':>8} {'RSS/conn':>9} {'CPU/1k':>8}")
    return _named_rows(header, rows) if rows else ""


def median_ratio_table(runs: Sequence[RunFigures], baselines: dict[str, tuple[str, ...]]) -> str:
    """Over the rounds: the median of each scenario's ratios to each of its baselines of the same round, and
    their spread (lowest to highest), for deliveries/s and CPU per delivery."""
    ratios: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for run, baseline in _against_baselines(runs, baselines):
        if not baseline.deliveries_per_second or not baseline.server_cpu_ms_per_1000:
            continue
        ratios.setdefault((f"{run.scenario} / {baseline.scenario}", run.mode), []).append(
            (
                run.deliveries_per_second / baseline.deliveries_per_second,
                run.server_cpu_ms_per_1000 / baseline.server_cpu_ms_per_1000,
            )
        )
    rows = []
    for (name, mode), values in ratios.items():
        cells = [
            f"{statistics.median(column):.2f}x ({min(column):.2f}-{max(column):.2f})"
            for column in zip(*values, strict=True)
        ]
        rows.append((f"{name} {mode}, {len(values)} rounds", f" {cells[0]:>22} {cells[1]:>22}"))
    header = ("median ratio over rounds (spread)", f" {'deliveries/s':>22} {'CPU/1k':>22}")
    return _named_rows(header, rows) if rows else ""


def _named_rows(header: tuple[str, str], rows: list[tuple[str, str]]) -> str:
    """Rows of a name and its cells, the names padded to the longest (34 characters at least)."""
    width = max(34, *(len(name) for name, _ in rows))
    return "\n".join(f"{name:{width}}{cells}" for name, cells in [header, *rows])


def proxy_ratio_table(runs: Sequence[RunFigures], anchor: str) -> str:
    """Each proxy's CPU per relayed frame divided by that of the `anchor` scenario's proxy, mode by mode."""
    by_key = {(run.scenario, run.mode): run for run in runs}
    lines = [f"{'proxy CPU per frame, ratio':34} {'to ' + anchor:>12}"]
    for run in runs:
        reference = by_key.get((anchor, run.mode))
        if run.scenario == anchor or reference is None or reference.proxy_cpu_us_per_frame is None:
            continue
        if run.proxy_cpu_us_per_frame is not None:
            lines.append(
                f"{f'{run.scenario} {run.mode}':34}"
                f" {_ratio(run.proxy_cpu_us_per_frame, reference.proxy_cpu_us_per_frame):>12}"
            )
    return "\n".join(lines) if len(lines) > 1 else ""


def _ratio(ours: float, theirs: float) -> str:
    return f"{ours / theirs:.2f}x" if theirs > 0 else "-"


def _row(cells: Sequence[str]) -> str:
    first, *rest = cells
    widths = [width for _, width in COLUMNS]
    return " ".join(
        [f"{first:<{widths[0]}}", *(f"{cell:>{width}}" for cell, width in zip(rest, widths[1:], strict=True))]
    )
