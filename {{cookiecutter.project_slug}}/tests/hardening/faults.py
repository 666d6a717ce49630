"""Dependencies that fail on demand: a Redis server of the test's own, and a TCP proxy that cuts connections.

The machine's Redis and PostgreSQL are shared by every test run, so the faults are made on the side: a
private `redis-server` is stopped and started again, and the app reaches PostgreSQL through a proxy that
is cut and restored.

    with running_redis(tmp_path) as redis_server:     # started on a free port; stopped on exit
        redis_server.stop()                            # the outage
        redis_server.start()                           # same port, empty (no persistence)

    with TcpProxy("127.0.0.1", 5432) as proxy:         # 127.0.0.1:<proxy.port> -> PostgreSQL
        proxy.cut()                                    # every connection dropped, new ones refused
        proxy.restore()
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Coroutine, Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import pytest
import redis

from ..processes import PORT_ATTEMPTS, free_port

START_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0
CHUNK_BYTES = 64 * 1024


@contextlib.contextmanager
def needs_redis() -> Iterator[None]:
    """Turns a missing Redis program into a skip, or into a failure with `REQUIRE_SERVICES=1`."""
    try:
        yield
    except FileNotFoundError as error:
        if os.environ.get("REQUIRE_SERVICES") == "1":
            pytest.fail(f"{error} (REQUIRE_SERVICES=1)")
        pytest.skip(str(error))


@contextlib.contextmanager
def running_redis(directory: Path) -> Iterator[PrivateRedis]:
    """A started `PrivateRedis`, stopped on exit; skipped without `redis-server` (see `needs_redis`)."""
    with needs_redis():
        server = PrivateRedis(directory)
    with server:
        yield server


class PrivateRedis:
    """A `redis-server` on a loopback port (a free one unless given), in `directory`, persisting nothing.

    `options` are more command-line options, such as those of a cluster node.
    """

    def __init__(self, directory: Path, port: int | None = None, options: Sequence[str] = ()) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise FileNotFoundError("redis-server is not installed")
        self.binary = binary
        self.directory = directory
        self.port = free_port() if port is None else port
        self.options = list(options)
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = directory / "redis.log"
        self._log_start = 0
        self._may_move = port is None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> None:
        """Start the server on its port, and return once it answers PING. A port chosen here is chosen again
        if another process took it first; once the server has started, it keeps its port for restarts."""
        attempts_left = PORT_ATTEMPTS if self._may_move else 1
        while True:
            attempts_left -= 1
            self.launch()
            try:
                self.wait_answers()
            except RuntimeError:
                if attempts_left and self.port_taken():
                    self.port = free_port()
                    continue
                raise
            self._may_move = False
            return

    def launch(self) -> None:
        """Start the server on its port, without waiting for it: several can then start side by side."""
        command = [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            *self.options,
        ]
        self.directory.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self._log_start = log.tell()
            self.process = subprocess.Popen(
                command, cwd=self.directory, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )

    def wait_answers(self) -> None:
        """Return once the launched server answers; raise if it exits or `START_TIMEOUT` passes.

        The answer must come from the launched process: another test's server that took the port first
        would answer too.
        """
        client = redis.Redis.from_url(self.url, socket_connect_timeout=1, socket_timeout=1)
        deadline = time.monotonic() + START_TIMEOUT
        try:
            while self.running and time.monotonic() < deadline:
                with contextlib.suppress(redis.ConnectionError, redis.TimeoutError):
                    if self.process is not None and client.info("server")["process_id"] == self.process.pid:
                        return
                time.sleep(0.02)
        finally:
            client.close()
        raise RuntimeError(f"redis-server on port {self.port} did not start:\n{self.output()[-2000:]}")

    def output(self) -> str:
        """What the server logged since it was last launched."""
        with self.log_path.open("rb") as log:
            log.seek(self._log_start)
            return log.read().decode(errors="replace")

    def port_taken(self) -> bool:
        """Whether the last launch exited because another process holds the port."""
        return not self.running and "address already in use" in self.output().lower()

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL); its clients lose their connections."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(STOP_TIMEOUT)

    def kill(self) -> None:
        """SIGKILL the server, as in a crash, and wait for it to exit."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.kill()
            process.wait(STOP_TIMEOUT)


class TcpProxy:
    """Forwards connections to 127.0.0.1:`port` to `upstream`, from an event loop in a thread of its own.

    `cut()` drops every connection it carries and closes the port, so that new ones are refused, until
    `restore()` opens it again.
    """

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.port = free_port()
        self.connections = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="tcp-proxy", daemon=True)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    def __enter__(self) -> Self:
        self._thread.start()
        self.restore()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.cut()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(STOP_TIMEOUT)
        self._loop.close()

    def cut(self) -> None:
        self._call(self._cut())

    def restore(self) -> None:
        self._call(self._listen())

    def _call(self, coroutine: Coroutine[Any, Any, None]) -> None:
        asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(STOP_TIMEOUT)

    async def _listen(self) -> None:
        if self._server is None:
            self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)

    async def _cut(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    async def _accept(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            client_writer.transport.abort()
            return
        self.connections += 1
        self._writers |= {client_writer, upstream_writer}
        await asyncio.gather(
            self._pipe(client_reader, upstream_writer), self._pipe(upstream_reader, client_writer)
        )

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while data := await reader.read(CHUNK_BYTES):
                writer.write(data)
                await writer.drain()
        writer.transport.abort()
        self._writers.discard(writer)
