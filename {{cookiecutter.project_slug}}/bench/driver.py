"""The orchestrator's side of the load generators: start them, send commands, read the answers."""

from __future__ import annotations

import asyncio
import sys
from typing import Any, Self

import orjson

from .loadgen import STDIN_LINE_LIMIT
from .servers import PROJECT_DIR


class GeneratorError(RuntimeError):
    """A load generator failed a command, or exited."""


class Generator:
    """One `bench.loadgen` process; see its module for the commands."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self._lock = asyncio.Lock()

    @classmethod
    async def start(cls) -> Self:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.loadgen",
            cwd=PROJECT_DIR,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            limit=STDIN_LINE_LIMIT,
        )
        return cls(process)

    @property
    def pid(self) -> int:
        return self.process.pid

    async def call(self, op: str, **arguments: Any) -> dict[str, Any]:
        stdin, stdout = self.process.stdin, self.process.stdout
        if stdin is None or stdout is None:
            raise GeneratorError("the generator's pipes are closed")
        async with self._lock:
            stdin.write(orjson.dumps({"op": op, **arguments}) + b"\n")
            await stdin.drain()
            line = await stdout.readline()
        if not line:
            raise GeneratorError(f"load generator {self.pid} exited with {await self.process.wait()}")
        reply: dict[str, Any] = orjson.loads(line)
        if "error" in reply:
            raise GeneratorError(f"load generator {self.pid} failed {op}: {reply['error']}")
        return reply

    async def stop(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        try:
            async with asyncio.timeout(10):
                await self.process.wait()
        except TimeoutError:
            self.process.kill()
            await self.process.wait()


async def call_all(generators: list[Generator], op: str, **arguments: Any) -> list[dict[str, Any]]:
    return list(await asyncio.gather(*(generator.call(op, **arguments) for generator in generators)))
