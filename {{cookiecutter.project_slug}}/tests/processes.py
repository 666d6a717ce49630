"""Real servers for tests: uvicorn processes on free loopback ports, and in-loop servers for ASGI apps.

    with ProcessGroup(tmp_path) as group:                    # every process is stopped on exit
        app1 = group.start_app("app1", env={"BROKER_URL": redis_url, ...})
        app2 = group.start_app("app2", env=...)
{%- if cookiecutter.use_gateway == "y" %}
        gateway = group.start_gateway([app1, app2])          # round-robin over both
{%- endif %}
        app1.kill()                                          # SIGKILL, as in a crash

`start*` return once the health endpoint answers 200, and fail with the process's output otherwise. Each
process runs in its own session so that stopping it reaches nothing else; `stop()` sends SIGTERM and then
SIGKILL after a grace period. The `process_group` fixture in `conftest.py` gives each test its own group.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import httpx
import uvicorn
from starlette.types import ASGIApp

PROJECT_DIR = Path(__file__).resolve().parent.parent
SOURCE_DIR = PROJECT_DIR / "src"
STARTUP_TIMEOUT = 30.0
STOP_GRACE = 5.0
PORT_ATTEMPTS = 3
FIRST_TEST_PORT = 10000
TCP_LISTEN = "0A"  # the state column of /proc/net/tcp
IN_LOOP_TIMEOUT = 10


def _ephemeral_ports() -> range:
    """The kernel's range for the local ports of outgoing connections: any client connecting anywhere can
    take a port in it between our choosing it and a server binding it."""
    try:
        low, high = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    except (OSError, ValueError):
        low, high = 32768, 65535
    return range(low, high + 1)


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def free_port(offsets: Sequence[int] = (0,)) -> int:
    """A loopback port `port` such that each `port + offset` is free now and outside the ephemeral range.

    Another test may still take one before the server does (servers here retry on a new port).
    """
    ports = range(FIRST_TEST_PORT, _ephemeral_ports().start - max(offsets))
    while True:
        port = random.choice(ports)
        if all(_bindable(port + offset) for offset in offsets):
            return port


class ServerProcess:
    """One server process listening on 127.0.0.1:`port`."""

    def __init__(self, name: str, port: int, process: subprocess.Popen[bytes], log_path: Path) -> None:
        self.name = name
        self.port = port
        self.process = process
        self.log_path = log_path

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self.process.poll() is None

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_healthy(self, health_path: str = "/healthz", timeout: float = STARTUP_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.running:
                raise RuntimeError(f"{self.name} exited with {self.process.returncode}:\n{self.output()}")
            try:
                healthy = httpx.get(self.base_url + health_path, timeout=1.0).status_code == 200
            except httpx.TransportError:
                healthy = False  # not listening yet
            if healthy and self.listening():
                return
            time.sleep(0.05)
        self.kill()
        raise TimeoutError(f"{self.name} was not healthy within {timeout}s:\n{self.output()}")

    def listening(self) -> bool:
        """Whether the socket listening on the port is this process's, not another test's server that took
        the port first (and answered the health check). Where the kernel does not say, assume it is."""
        try:
            rows = Path("/proc/net/tcp").read_text().splitlines()[1:]
            fds = os.listdir(f"/proc/{self.process.pid}/fd")
        except OSError:
            return True
        listeners = {
            f"socket:[{fields[9]}]"
            for fields in (row.split() for row in rows)
            if fields[3] == TCP_LISTEN and int(fields[1].rsplit(":", 1)[1], 16) == self.port
        }
        for fd in fds:
            with contextlib.suppress(OSError):  # closed since the listing
                if os.readlink(f"/proc/{self.process.pid}/fd/{fd}") in listeners:
                    return True
        return False

    def stop(self, grace: float = STOP_GRACE) -> int:
        """SIGTERM, then SIGKILL if it is still running after `grace` seconds; the exit status."""
        if self.running:
            self._signal(signal.SIGTERM)
            try:
                return self.process.wait(grace)
            except subprocess.TimeoutExpired:
                pass
        self.kill()
        return self.process.returncode

    def kill(self) -> None:
        """SIGKILL: no shutdown, no close frames, as in a crash."""
        if self.running:
            self._signal(signal.SIGKILL)
        self.process.wait(STOP_GRACE)

    def _signal(self, signum: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError):  # exited meanwhile
            os.killpg(self.process.pid, signum)


class ProcessGroup:
    """Server processes started for one test (or module), all stopped when the group exits."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.processes: list[ServerProcess] = []

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop_all()

    def stop_all(self) -> None:
        for server in reversed(self.processes):
            server.stop()

    def start(
        self,
        name: str,
        command: Callable[[int], Sequence[str]],
        *,
        port: int | None = None,
        env: Mapping[str, str] | None = None,
        health_path: str = "/healthz",
        timeout: float = STARTUP_TIMEOUT,
    ) -> ServerProcess:
        """Run `command(port)` with `env` on top of this environment; return once it is healthy.

        Without `port`, a free one is chosen, and chosen again if another process takes it first.
        """
        attempts_left = 1 if port is not None else PORT_ATTEMPTS
        while True:
            attempts_left -= 1
            server = self._spawn(name, command, port if port is not None else free_port(), env)
            try:
                server.wait_healthy(health_path, timeout)
            except RuntimeError:
                if attempts_left and "address already in use" in server.output().lower():
                    continue
                raise
            return server

    def start_uvicorn(
        self,
        name: str,
        app: str,
        *,
        factory: bool = False,
        app_dir: Path | None = None,
        port: int | None = None,
        env: Mapping[str, str] | None = None,
        health_path: str = "/healthz",
    ) -> ServerProcess:
        """`uvicorn <app>` (`module:attribute`), importable from `app_dir` and from `src/`."""
        options = ["--factory"] if factory else []
        if app_dir is not None:
            options += ["--app-dir", str(app_dir)]

        def command(port: int) -> list[str]:
            return [sys.executable, "-m", "uvicorn", app, "--host", "127.0.0.1", f"--port={port}", *options]

        return self.start(name, command, port=port, env=env, health_path=health_path)

    def start_app(
        self,
        name: str,
        *,
        env: Mapping[str, str] | None = None,
        port: int | None = None,
        timeout: float = STARTUP_TIMEOUT,
    ) -> ServerProcess:
        """An app instance (the `serve` command), named `name` in `/healthz` and `X-Instance`."""

        def command(port: int) -> list[str]:
            return [*self._cli, "serve", "--host", "127.0.0.1", "--port", str(port)]

        app_env = {"INSTANCE_NAME": name, **(env or {})}
        return self.start(name, command, port=port, env=app_env, timeout=timeout)
{%- if cookiecutter.use_gateway == "y" %}

    def start_gateway(
        self,
        upstreams: Sequence[ServerProcess],
        *,
        name: str = "gateway",
        env: Mapping[str, str] | None = None,
        port: int | None = None,
        timeout: float = STARTUP_TIMEOUT,
    ) -> ServerProcess:
        """The gateway (the `gateway` command) over `upstreams`, polling their health often."""
        gateway_env = {
            "GATEWAY_UPSTREAMS": ",".join(upstream.base_url for upstream in upstreams),
            "GATEWAY_HEALTH_INTERVAL_SECONDS": "0.2",
            **(env or {}),
        }

        def command(port: int) -> list[str]:
            return [*self._cli, "gateway", "--host", "127.0.0.1", "--port", str(port)]

        return self.start(
            name, command, port=port, env=gateway_env, health_path="/gateway/readyz", timeout=timeout
        )
{%- endif %}

    @property
    def _cli(self) -> list[str]:
        return [sys.executable, "-m", "{{ cookiecutter.package_name }}"]

    def _spawn(
        self, name: str, command: Callable[[int], Sequence[str]], port: int, env: Mapping[str, str] | None
    ) -> ServerProcess:
        python_path = os.pathsep.join(filter(None, [str(SOURCE_DIR), os.environ.get("PYTHONPATH")]))
        full_env = {**os.environ, "PYTHONPATH": python_path, "PYTHONUNBUFFERED": "1", **(env or {})}
        log_path = self.log_dir / f"{name}-{port}.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                list(command(port)),
                cwd=PROJECT_DIR,
                env=full_env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        server = ServerProcess(name, port, process, log_path)
        self.processes.append(server)
        return server


@asynccontextmanager
async def serve_in_loop(app: ASGIApp, **options: Any) -> AsyncIterator[str]:
    """Serve `app` with uvicorn inside the running event loop, on a free loopback port; yield its base URL.

    Real sockets and a real server, with the app's tasks visible to the test (to check none is leaked).
    `options` go to `uvicorn.Config`.
    """
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=IN_LOOP_TIMEOUT, **options)
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve(sockets=[sock]), name=f"uvicorn:{port}")
    try:
        async with asyncio.timeout(IN_LOOP_TIMEOUT):
            while not server.started:
                if serving.done():
                    serving.result()
                    raise RuntimeError("uvicorn stopped during start-up")
                await asyncio.sleep(0.01)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        async with asyncio.timeout(IN_LOOP_TIMEOUT):
            await serving
        sock.close()


async def wait_until(condition: Callable[[], Awaitable[bool]], within: float = 10.0) -> None:
    """Poll `condition` until it holds; `TimeoutError` if it still does not after `within` seconds."""
    async with asyncio.timeout(within):
        while True:
            if await condition():
                return
            await asyncio.sleep(0.02)
