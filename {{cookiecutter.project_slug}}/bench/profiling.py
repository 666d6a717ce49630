"""Sampling profiles of a server during a run, with py-spy, summarised by function.

py-spy (`uv sync --group bench`) attaches to a running process without restarting it; attaching needs
the right to ptrace it (root, or `kernel.yama.ptrace_scope=0`). Samples are written as collapsed stacks
(`frame;frame;frame count` per line), which flame graph tools and speedscope read.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import shutil
import signal
import sys
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

SAMPLES_PER_SECOND = 250
ATTACH_SECONDS = 1.0


@contextlib.asynccontextmanager
async def record(pid: int, output: Path) -> AsyncIterator[None]:
    """Sample `pid` (all its threads, not idle ones) while the block runs, into `output`."""
    py_spy = shutil.which("py-spy", path=os.pathsep.join([str(Path(sys.executable).parent), os.defpath]))
    if py_spy is None:
        raise RuntimeError("py-spy is not installed: uv sync --group bench")
    process = await asyncio.create_subprocess_exec(
        py_spy,
        "record",
        "--pid",
        str(pid),
        "--rate",
        str(SAMPLES_PER_SECOND),
        "--format",
        "raw",
        "--nolineno",
        "--nonblocking",
        "--output",
        str(output),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    await asyncio.sleep(ATTACH_SECONDS)
    try:
        yield
    finally:
        process.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
        _, errors = await process.communicate()
        if process.returncode != 0:
            raise RuntimeError(f"py-spy failed on pid {pid}: {errors.decode(errors='replace')}")


def summarize(path: Path, top: int = 20) -> str:
    """The functions that take the most samples: running themselves, and with their callees.

    The second list leaves out each thread's trunk, the frames every one of its samples passes through
    (`Runner.run` and the like), which would otherwise head it at 100%.
    """
    samples: list[tuple[list[str], int]] = []
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        samples.append(([_short(frame) for frame in stack.split(";")], int(count_text)))
    total = sum(count for _, count in samples)
    if not total:
        return f"{path.name}: no samples"
    trunks: dict[str, list[str]] = {}
    for frames, _count in samples:
        trunk = trunks.setdefault(frames[0], frames)
        shared = itertools.takewhile(lambda pair: pair[0] == pair[1], zip(trunk, frames, strict=False))
        trunks[frames[0]] = [frame for frame, _ in shared]
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    for frames, count in samples:
        own[frames[-1]] += count
        below_trunk = frames[min(len(trunks[frames[0]]), len(frames) - 1) :]
        inclusive.update(dict.fromkeys(below_trunk, count))
    by_thread: Counter[str] = Counter()
    for frames, count in samples:
        by_thread[frames[0]] += count
    threads = ", ".join(f"{100 * count / total:.0f}% {root}" for root, count in by_thread.most_common(4))
    lines = [f"{path.name}: {total} samples of busy threads ({threads})"]
    for title, counter in (("own time", own), ("with callees, below each thread's trunk", inclusive)):
        lines.append(f"  {title}:")
        lines += [f"    {100 * count / total:5.1f}%  {frame}" for frame, count in counter.most_common(top)]
    return "\n".join(lines)


def _short(frame: str) -> str:
    """`function (path/to/site-packages/package/module.py)` -> `function (package/module.py)`."""
    function, _, location = frame.partition(" (")
    parts = location.rstrip(")").split("/")
    return f"{function} ({'/'.join(parts[-2:])})" if location else function
