"""Server processes under test: uvicorn on free loopback ports, and what Linux's /proc says about them."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Self

import httpx

PROJECT_DIR = Path(__file__).resolve().parent.parent
STARTUP_TIMEOUT = 30.0
STOP_GRACE = 5.0
PORT_ATTEMPTS = 3
TCP_LISTEN = "0A"  # the state of a listening socket in /proc/net/tcp
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def rss_bytes(pid: int) -> int:
    """Resident memory of a process (VmRSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise ValueError(f"/proc/{pid}/status has no VmRSS")


def listens_on(pid: int, port: int) -> bool:
    """Whether process `pid` holds the socket listening on 127.0.0.1:`port`: a process that took the port
    first would answer a readiness check in its place."""
    rows = Path("/proc/net/tcp").read_text().splitlines()[1:]
    listeners = {
        f"socket:[{fields[9]}]"
        for fields in map(str.split, rows)
        if fields[3] == TCP_LISTEN and int(fields[1].rsplit(":", 1)[1], 16) == port
    }
    try:
        fds = list(Path(f"/proc/{pid}/fd").iterdir())
    except OSError:  # exited
        return False
    for fd in fds:
        with contextlib.suppress(OSError):  # closed since the listing
            if os.readlink(fd) in listeners:
                return True
    return False


def cpu_seconds(pid: int) -> float:
    """CPU time a process has used so far, user and system (utime + stime)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()  # the command name may hold spaces and parentheses
    utime, stime = int(fields[11]), int(fields[12])
    return (utime + stime) / CLOCK_TICKS


def process_tree(pid: int) -> list[int]:
    """`pid` and its living descendants: a server's workers."""
    pids = [pid]
    for parent in pids:  # grows as children are found
        with contextlib.suppress(OSError):  # exited meanwhile
            for task in Path(f"/proc/{parent}/task").iterdir():
                pids.extend(int(child) for child in (task / "children").read_text().split())
    return pids


def tree_cpu_seconds(pid: int) -> float:
    """CPU time used so far by `pid` and its living descendants (a pre-fork server's workers)."""
    total = 0.0
    for member in process_tree(pid):
        with contextlib.suppress(OSError):
            total += cpu_seconds(member)
    return total


NGINX_CONF = PROJECT_DIR / "deploy" / "nginx.conf"
NGINX_UPSTREAM_SERVER = re.compile(r"^(\s*)server app\d+:8000 (.*);$", re.MULTILINE)


def nginx_config(upstreams: Sequence[str], port: int, prefix: Path, *, workers: int | None = None) -> str:
    """deploy/nginx.conf with `upstreams` (`host:port`) as its instances, listening on 127.0.0.1:`port`.

    Every file nginx writes goes under `prefix`, so that it runs unprivileged and beside another nginx.
    """
    template = NGINX_CONF.read_text()
    found = NGINX_UPSTREAM_SERVER.findall(template)
    if not found:
        raise ValueError(f"{NGINX_CONF} has no `server appN:8000 ...;` line in its upstream")
    indent, parameters = found[0]
    servers = "\n".join(f"{indent}server {address} {parameters};" for address in upstreams)
    config = NGINX_UPSTREAM_SERVER.sub("", template, count=len(found) - 1)
    config = NGINX_UPSTREAM_SERVER.sub(lambda _match: servers, config, count=1)
    config = config.replace("listen 8080;", f"listen 127.0.0.1:{port};")
    if workers is not None:
        config = config.replace("worker_processes auto;", f"worker_processes {workers};")
    temp_paths = "".join(
        f"    {kind}_temp_path {prefix / kind};\n"
        for kind in ("client_body", "proxy", "fastcgi", "scgi", "uwsgi")
    )
    config = config.replace("http {\n", "http {\n" + temp_paths, 1)
    return f"pid {prefix / 'nginx.pid'};\nerror_log stderr warn;\n{config}"


class PortTaken(RuntimeError):
    """Another process took a server's port between `free_port()` and the server's bind."""


@dataclass
class Server:
    name: str
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self.process.pid

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, path: str, timeout: float = STARTUP_TIMEOUT) -> None:
        """Until `path` answers 200 from this server; `PortTaken` if another process has its port."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                failure = f"{self.name} exited with {self.process.returncode}:\n{self.output()}"
                if "address already in use" in failure.lower():
                    raise PortTaken(failure)
                raise RuntimeError(failure)
            with contextlib.suppress(httpx.TransportError):  # not listening yet
                if httpx.get(self.base_url + path, timeout=1.0).status_code == 200:
                    if listens_on(self.pid, self.port):
                        return
                    raise PortTaken(f"another process than {self.name} answers on port {self.port}")
            time.sleep(0.05)
        raise TimeoutError(f"{self.name} was not ready within {timeout}s:\n{self.output()}")

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after a grace period; the process runs in its own session."""
        for signum in (signal.SIGTERM, signal.SIGKILL):
            if self.process.poll() is not None:
                return
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signum)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(STOP_GRACE)


@dataclass
class ServerGroup:
    """The servers of one scenario, all stopped when the block exits."""

    log_dir: Path
    servers: list[Server] = field(default_factory=list)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        for server in reversed(self.servers):
            server.stop()

    def start_uvicorn(
        self,
        name: str,
        app: str,
        *,
        options: Sequence[str],
        env: Mapping[str, str],
        ready_path: str = "/healthz",
        factory: bool = False,
    ) -> Server:
        """`uvicorn <app> <options>`, serving once `ready_path` answers 200."""
        arguments = [
            *options,
            "--log-level",
            "warning",
            "--no-access-log",
            *(["--factory"] if factory else []),
        ]

        def command(port: int) -> list[str]:
            uvicorn = [sys.executable, "-m", "uvicorn", app, "--host", "127.0.0.1", "--port", str(port)]
            return [*uvicorn, *arguments]

        return self._start_on_a_free_port(name, command, env, ready_path)

    def start_nginx(self, name: str, upstreams: Sequence[str], *, workers: int | None = None) -> Server:
        """nginx with deploy/nginx.conf in front of `upstreams` (`host:port`), serving once it answers."""
        executable = shutil.which("nginx") or "/usr/sbin/nginx"

        def command(port: int) -> list[str]:
            prefix = self.log_dir / f"{name}-{port}"
            prefix.mkdir()
            config_path = prefix / "nginx.conf"
            config_path.write_text(nginx_config(upstreams, port, prefix, workers=workers))
            configuration = ["-p", str(prefix), "-c", str(config_path), "-e", "stderr"]
            return [executable, *configuration, "-g", "daemon off;"]

        return self._start_on_a_free_port(name, command, {}, "/healthz")

    def _start_on_a_free_port(
        self, name: str, command: Callable[[int], Sequence[str]], env: Mapping[str, str], ready_path: str
    ) -> Server:
        """Run `command(port)` on a free port, serving once `ready_path` answers; on another port if another
        process takes that one first."""
        attempts_left = PORT_ATTEMPTS
        while True:
            attempts_left -= 1
            port = free_port()
            server = self._spawn(name, command(port), port, env)
            try:
                server.wait_ready(ready_path)
                return server
            except PortTaken:
                server.stop()
                self.servers.remove(server)
                if not attempts_left:
                    raise

    def _spawn(self, name: str, command: Sequence[str], port: int, env: Mapping[str, str]) -> Server:
        python_path = os.pathsep.join([str(PROJECT_DIR / "src"), str(PROJECT_DIR)])
        full_env = {**os.environ, "PYTHONPATH": python_path, "PYTHONUNBUFFERED": "1", **env}
        log_path = self.log_dir / f"{name}-{port}.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(  # noqa: S603 - our own interpreter and arguments
                list(command),
                cwd=PROJECT_DIR,
                env=full_env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        server = Server(name, port, process, log_path)
        self.servers.append(server)
        return server
