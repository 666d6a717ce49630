"""A baked project's compose stack under a real Docker daemon: build, up, faults on its containers, down."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

REQUIRE_SERVICES = os.environ.get("REQUIRE_SERVICES") == "1"
# What a machine needs that a Docker host on the Internet does not, set by `.ci/run`; both go in an override
# file of the test's own, never in the generated files.
# - The network of image builds, where the default bridge cannot reach the package index: `host`.
BUILD_NETWORK = os.environ.get("DOCKER_BUILD_NETWORK", "")
# - Where the containers reach no DNS server, Docker's embedded DNS leaves a name it does not know (a stopped
#   service's) unanswered and each lookup waits 2 x 5 s instead of failing at once as with a real resolver;
#   such lookups fill the thread pool of asyncio's getaddrinfo, and a Redis restart or a stopped instance
#   then stalls everything. With a DNS server given here, lookups also get one attempt of one second.
CONTAINER_DNS = os.environ.get("DOCKER_CONTAINER_DNS", "")


def docker_or_skip() -> None:
    """Skip (or fail, with REQUIRE_SERVICES=1) unless a Docker daemon answers and docker-compose is here."""
    problem = None
    if shutil.which("docker") is None or shutil.which("docker-compose") is None:
        problem = "docker and docker-compose are not installed (Debian: docker.io, docker-compose)"
    elif subprocess.run(["docker", "info"], capture_output=True, timeout=60, check=False).returncode != 0:
        problem = "no Docker daemon answers (`docker info` fails)"
    if problem is None:
        return
    if REQUIRE_SERVICES:
        pytest.fail(f"{problem} (REQUIRE_SERVICES=1)")
    pytest.skip(problem)


@dataclass
class ComposeStack:
    """One compose project, named uniquely, of the unmodified `docker-compose.yml` of `project_dir`."""

    project_dir: Path
    name: str
    gateway_port: int
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.gateway_port}"

    @property
    def files(self) -> list[str]:
        """The unmodified compose file, and this machine's override if it needs one."""
        services = yaml.safe_load((self.project_dir / "docker-compose.yml").read_text())["services"]
        override: dict[str, dict[str, object]] = {}
        for name, service in services.items():
            if BUILD_NETWORK and "build" in service:
                override.setdefault(name, {})["build"] = {"network": BUILD_NETWORK}
            if CONTAINER_DNS:
                override.setdefault(name, {}).update(dns=[CONTAINER_DNS], dns_opt=["timeout:1", "attempts:1"])
        if not override:
            return ["-f", "docker-compose.yml"]
        override_file = self.project_dir / "machine.override.yml"
        override_file.write_text(yaml.safe_dump({"services": override}))
        return ["-f", "docker-compose.yml", "-f", override_file.name]

    def environment(self) -> dict[str, str]:
        """Only what compose needs: nothing of the caller's environment reaches the containers by accident."""
        kept = {key: os.environ[key] for key in ("PATH", "HOME", "DOCKER_HOST") if key in os.environ}
        return {**kept, "COMPOSE_PROJECT_NAME": self.name, "GATEWAY_PORT": f"127.0.0.1:{self.gateway_port}"}

    def compose(
        self, *arguments: str, timeout: float = 600, check: bool = True, stdin: str | None = None
    ) -> str:
        result = subprocess.run(
            ["docker-compose", *self.files, *arguments],
            input=stdin,
            cwd=self.project_dir,
            env=self.environment(),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            command = " ".join(arguments)
            output = result.stdout + result.stderr
            raise AssertionError(f"docker-compose {command} exited {result.returncode}:\n{output}")
        return result.stdout

    def timed(self, step: str, *arguments: str, timeout: float = 600) -> str:
        started = time.monotonic()
        output = self.compose(*arguments, timeout=timeout)
        self.timings[step] = time.monotonic() - started
        return output

    def container(self, service: str) -> str:
        return self.compose("ps", "-q", service).strip()

    def inspect(self, service: str) -> dict[str, object]:
        state: dict[str, object] = json.loads(
            subprocess.run(
                ["docker", "inspect", "--format", "{{json .State}}", self.container(service)],
                capture_output=True,
                text=True,
                check=True,
                timeout=60,
            ).stdout
        )
        return state

    def answers(self, service: str, path: str) -> bool:
        """Whether `service` answers 200 on `path`, asked from inside its container (no port of its own)."""
        probe = f"import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000{path}', timeout=2)"
        command = ["docker", "exec", self.container(service), "python", "-c", probe]
        return subprocess.run(command, capture_output=True, timeout=60, check=False).returncode == 0

    def docker(self, *arguments: str, timeout: float = 120) -> None:
        subprocess.run(["docker", *arguments], capture_output=True, text=True, check=True, timeout=timeout)

    def logs(self) -> str:
        return self.compose("logs", "--no-color", "--tail", "1500", timeout=120, check=False)

    def down(self) -> None:
        self.compose("down", "-v", "--remove-orphans", "--timeout", "10", timeout=300, check=False)
