"""What is measured: the service and the two bare relays, started on loopback, and their clients' addresses.

- `relay` (baseline, 1 process): `bench.baselines.relay`.
- `redis-relay` (baseline, 2 processes and Redis): `bench.baselines.redis_relay`.
- `storing-relay` (1 process): the bare relay storing each message first, with the service's own
  `MessageLog` on a SQLite file, as `app` stores it (`bench.baselines.storing_relay`); not in a default
  run.
- `app` (1 instance): the service on a SQLite file and the `memory://` broker, as it runs out of the box.
- `app-redis` (2 instances): the service on PostgreSQL and Redis, as deployed.
- `app-batch`, `app-redis-batch`: the same, every client asking for batched frames (`?batch=1`): the
  events waiting for a socket go out together, one JSON object a line of one frame.
- `fdw`, `fdw-redis` (1 process, 2 processes and Redis): fastapi-distributed-websocket 0.2.0, the library
  whose API the engine implements (`bench.baselines.distributed_websocket`).
- `app-unsequenced`, `app-redis-unsequenced`: the same with the rooms joined as plain groups
  (`bench.unsequenced`), to measure what recovery costs; not in a default run.
{%- if cookiecutter.use_gateway == "y" %}
- `gateway`, `gateway-2w` (2 instances): the same, every client through the gateway with 1 or 2 workers.
- `gateway-frames` (2 instances): the gateway under uvicorn's own WebSocket protocol, which relays frame by
  frame through ASGI (`WebSocketProxy`) instead of copying bytes; 1 worker.
{%- endif %}
- `nginx` (2 instances): the same through nginx with deploy/nginx.conf and one worker, the anchor proxy
  (run only where nginx is installed).

Behind a proxy, the servers measured are the app instances (their CPU per delivery compares with
`app-redis`'s); the proxy's CPU, all its workers together, is reported per relayed frame.

The service's users register over HTTP and log in for their tokens. By default there are fewer users than
clients (`--users`), as when people have several tabs or devices open: each user's first connection is
announced to the room (a `presence.join`, or with others of its tick in a `presence.diff`), so N users cost
up to N²/2 presence deliveries while they connect, which measures the connection storm rather than the
fan-out. Password hashing is made cheap on the bench instances
(`ARGON2_TIME_COST=1`, `ARGON2_MEMORY_COST=1024`): production-cost hashes for every user would take minutes
and measure nothing about fan-out. The rate limit is raised so that the publisher can send flat out, and
the limit of connections per user so that any `--users` fits (each connection is still counted).
Everything else is the production configuration.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import sys
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import httpx

from .servers import PROJECT_DIR, Server, ServerGroup

APP = "{{ cookiecutter.package_name }}.main:create_app"
APP_PROTOCOL = "{{ cookiecutter.package_name }}.websocket_protocol:FrameWritingProtocol"
APP_UNSEQUENCED = "bench.unsequenced:create_app"
{%- if cookiecutter.use_gateway == "y" %}
GATEWAY = "{{ cookiecutter.package_name }}.gateway:create_gateway"
RELAY_PROTOCOL = "{{ cookiecutter.package_name }}.gateway.websocket_relay:RelayProtocol"
{%- endif %}
ROOM = "bench"
SIGN_UP_CONCURRENCY = 16


@dataclass(frozen=True)
class RunConfig:
    """How the servers are run, the same for every scenario of one bench run."""

    clients: int
    users: int
    """The service's clients sign in as this many users, in turn: a user with several tabs or devices."""
    ws: str
    loop: str
    compression: str
    """The servers' `WS_COMPRESSION`: `off` declines permessage-deflate, `deflate` negotiates it."""
    redis_url: str
    postgres_url: str
    log_dir: Path
    run_id: str
    """Names this run's database and broker channels, so that runs never meet on a shared server."""

    @property
    def uvicorn_options(self) -> list[str]:
        return self._options(self.ws)

    @property
    def service_options(self) -> list[str]:
        """As `serve` runs the service: with its own WebSocket protocol, unless `ws` names another."""
        return self._options(APP_PROTOCOL if self.ws == "auto" else self.ws)

    def _options(self, ws: str) -> list[str]:
        deflate = "True" if self.compression == "deflate" else "False"
        return ["--ws", ws, "--loop", self.loop, "--ws-per-message-deflate", deflate]


@dataclass(frozen=True)
class Endpoint:
    url: str
    token: str | None = None


@dataclass
class Deployment:
    servers: list[Server]
    endpoints: list[Endpoint]
    """One per client, the publisher's first, spread over the servers in turn."""
    proxies: list[Server] = field(default_factory=list)
    """Between the clients and the servers, when the clients go through one."""


Deploy = Callable[[AsyncExitStack, RunConfig], Awaitable[Deployment]]


@dataclass(frozen=True)
class Scenario:
    name: str
    instances: int
    summary: str
    deploy: Deploy
    baseline: str | None = None
    also_against: tuple[str, ...] = ()
    """Scenarios to compare it with as well as its baseline, when they ran beside it."""
    requires: str | None = None
    """An executable the scenario needs; without it on PATH the scenario is left out of a default run."""
    default: bool = True
    """Whether a run without `--scenarios` measures it (when it is available)."""

    @property
    def available(self) -> bool:
        return self.requires is None or shutil.which(self.requires) is not None


async def deploy_relay(stack: AsyncExitStack, config: RunConfig) -> Deployment:
    return await deploy_baseline(stack, config, "bench.baselines.relay:app", ["relay"], {})


async def deploy_storing_relay(stack: AsyncExitStack, config: RunConfig) -> Deployment:
    env = {"BENCH_DATABASE_URL": sqlite_database_url(config, "storing-relay")}
    return await deploy_baseline(stack, config, "bench.baselines.storing_relay:app", ["storing-relay"], env)


async def deploy_redis_relay(stack: AsyncExitStack, config: RunConfig) -> Deployment:
    env = {"BENCH_REDIS_URL": config.redis_url, "BENCH_CHANNEL": f"bench-{config.run_id}-relay"}
    return await deploy_baseline(
        stack, config, "bench.baselines.redis_relay:app", ["redis-relay-1", "redis-relay-2"], env
    )


async def deploy_distributed_websocket(
    stack: AsyncExitStack, config: RunConfig, *, instances: int
) -> Deployment:
    env = {
        "BENCH_BROKER_URL": "memory://" if instances == 1 else config.redis_url,
        "BENCH_CHANNEL": f"bench-{config.run_id}-distributed-websocket",
    }
    names = [f"fdw-{number}" for number in range(1, instances + 1)]
    return await deploy_baseline(stack, config, "bench.baselines.distributed_websocket:app", names, env)


async def deploy_baseline(
    stack: AsyncExitStack, config: RunConfig, app: str, names: list[str], env: dict[str, str]
) -> Deployment:
    """`app` under uvicorn, a process for each of `names`, its clients spread over them on `/ws`."""
    group = stack.enter_context(ServerGroup(config.log_dir))
    servers = await start_all(
        lambda name: group.start_uvicorn(name, app, options=config.uvicorn_options, env=env), names
    )
    return Deployment(servers, spread(servers, "/ws", [None] * config.clients))


def sqlite_database_url(config: RunConfig, name: str) -> str:
    """A SQLite file of its own in the run's directory: a run may deploy a scenario several times
    (`--rounds`), each time on a new database."""
    return f"sqlite+aiosqlite:///{config.log_dir / f'bench-{config.run_id}-{name}-{secrets.token_hex(4)}.db'}"


async def deploy_app(stack: AsyncExitStack, config: RunConfig, *, batch: bool = False) -> Deployment:
    database_url = sqlite_database_url(config, "app")
    return await deploy_service(stack, config, database_url, "memory://", instances=1, batch=batch)


async def deploy_app_redis(stack: AsyncExitStack, config: RunConfig, *, batch: bool = False) -> Deployment:
    database = f"bench_{config.run_id}_{secrets.token_hex(4)}"
    database_url = await create_postgres_database(stack, config.postgres_url, database)
    return await deploy_service(stack, config, database_url, config.redis_url, instances=2, batch=batch)


async def deploy_app_unsequenced(stack: AsyncExitStack, config: RunConfig) -> Deployment:
    database_url = sqlite_database_url(config, "unsequenced")
    return await deploy_service(stack, config, database_url, "memory://", instances=1, app=APP_UNSEQUENCED)


async def deploy_app_redis_unsequenced(stack: AsyncExitStack, config: RunConfig) -> Deployment:
    name = f"bench_{config.run_id}_unsequenced"
    database_url = await create_postgres_database(stack, config.postgres_url, name)
    return await deploy_service(
        stack, config, database_url, config.redis_url, instances=2, app=APP_UNSEQUENCED
    )


{% if cookiecutter.use_gateway == "y" -%}
async def deploy_gateway(
    stack: AsyncExitStack, config: RunConfig, *, workers: int, relay_bytes: bool = True
) -> Deployment:
    apps = await deploy_app_redis(stack, config)
    group = stack.enter_context(ServerGroup(config.log_dir))
    env = {
        "LOG_LEVEL": "WARNING",
        "GATEWAY_UPSTREAMS": ",".join(server.base_url for server in apps.servers),
        "GATEWAY_WORKERS": str(workers),
    }
    # As `gateway --workers N` runs it, with its own WebSocket protocol (which leaves compression to the
    # client and the app); or under uvicorn's, not offering compression to clients.
    ws = RELAY_PROTOCOL if relay_bytes else config.ws
    options = ["--ws", ws, "--loop", config.loop, "--workers", str(workers), "--ws-per-message-deflate", "0"]
    gateway = await asyncio.to_thread(
        group.start_uvicorn,
        f"gateway-{workers}w" if relay_bytes else "gateway-frames",
        GATEWAY,
        options=options,
        env=env,
        ready_path="/gateway/readyz",
        factory=True,
    )
    return behind(apps, gateway)


GATEWAY_1W = partial(deploy_gateway, workers=1)
GATEWAY_2W = partial(deploy_gateway, workers=2)
GATEWAY_FRAMES = partial(deploy_gateway, workers=1, relay_bytes=False)


{% endif -%}
async def deploy_nginx(stack: AsyncExitStack, config: RunConfig) -> Deployment:
    apps = await deploy_app_redis(stack, config)
    group = stack.enter_context(ServerGroup(config.log_dir))
    upstreams = [urlsplit(server.base_url).netloc for server in apps.servers]
    nginx = await asyncio.to_thread(group.start_nginx, "nginx", upstreams, workers=1)
    return behind(apps, nginx)


def behind(apps: Deployment, proxy: Server) -> Deployment:
    """`apps` with every client going through `proxy` instead."""
    endpoints = [
        Endpoint(proxy.ws_url + urlsplit(endpoint.url).path, endpoint.token) for endpoint in apps.endpoints
    ]
    return Deployment(apps.servers, endpoints, proxies=[proxy])


SCENARIOS = {
    scenario.name: scenario
    for scenario in [
        Scenario("relay", 1, "bare Starlette relay", deploy_relay),
        Scenario("redis-relay", 2, "bare Redis pub/sub relay", deploy_redis_relay),
        Scenario(
            "storing-relay",
            1,
            "bare relay storing each message as the service does, SQLite",
            deploy_storing_relay,
            baseline="relay",
            default=False,
        ),
        Scenario(
            "app",
            1,
            "the service, SQLite + memory://",
            deploy_app,
            baseline="relay",
            also_against=("storing-relay",),
        ),
        Scenario("app-redis", 2, "the service, PostgreSQL + Redis", deploy_app_redis, baseline="redis-relay"),
        Scenario(
            "app-batch",
            1,
            "the service, SQLite + memory://, clients asking for batches",
            partial(deploy_app, batch=True),
            baseline="relay",
            also_against=("storing-relay",),
        ),
        Scenario(
            "app-redis-batch",
            2,
            "the service, PostgreSQL + Redis, clients asking for batches",
            partial(deploy_app_redis, batch=True),
            baseline="redis-relay",
        ),
        Scenario(
            "fdw",
            1,
            "fastapi-distributed-websocket 0.2.0, memory://",
            partial(deploy_distributed_websocket, instances=1),
            baseline="relay",
        ),
        Scenario(
            "fdw-redis",
            2,
            "fastapi-distributed-websocket 0.2.0, Redis",
            partial(deploy_distributed_websocket, instances=2),
            baseline="redis-relay",
        ),
        Scenario(
            "app-unsequenced", 1, "app, rooms as plain groups", deploy_app_unsequenced, "app", default=False
        ),
        Scenario(
            "app-redis-unsequenced",
            2,
            "app-redis, rooms as plain groups",
            deploy_app_redis_unsequenced,
            "app-redis",
            default=False,
        ),
{%- if cookiecutter.use_gateway == "y" %}
        Scenario("gateway", 2, "app-redis behind the gateway, 1 worker", GATEWAY_1W, "app-redis"),
        Scenario("gateway-2w", 2, "app-redis behind the gateway, 2 workers", GATEWAY_2W, "app-redis"),
        Scenario("gateway-frames", 2, "app-redis behind the gateway, by frames", GATEWAY_FRAMES, "app-redis"),
{%- endif %}
        Scenario("nginx", 2, "app-redis behind nginx, 1 worker", deploy_nginx, "app-redis", requires="nginx"),
    ]
}


async def deploy_service(
    stack: AsyncExitStack,
    config: RunConfig,
    database_url: str,
    broker_url: str,
    *,
    instances: int,
    batch: bool = False,
    app: str = APP,
) -> Deployment:
    group = stack.enter_context(ServerGroup(config.log_dir))
    env = {
        "ENVIRONMENT": "production",
        "SECRET_KEY": secrets.token_urlsafe(48),
        "LOG_LEVEL": "WARNING",
        "DATABASE_URL": database_url,
        "BROKER_URL": broker_url,
        "BROKER_CHANNEL": f"bench-{config.run_id}",
        "ARGON2_TIME_COST": "1",
        "ARGON2_MEMORY_COST": "1024",
        "AUTH_ATTEMPTS_PER_ADDRESS": "1000000",  # every client logs in from the same address
        "AUTH_ATTEMPTS_PER_USERNAME": "1000000",
        "WS_RATE_LIMIT_PER_SECOND": "1000000",
        "WS_RATE_LIMIT_BURST": "1000000",
        "WS_MAX_CONNECTIONS_PER_USER": str(config.clients),
    }

    def start(name: str) -> Server:
        instance_env = {**env, "INSTANCE_NAME": name}
        return group.start_uvicorn(
            name, app, options=config.service_options, env=instance_env, ready_path="/readyz", factory=True
        )

    # Nothing reads the tables before the first request, so the instances start while the migration runs.
    servers, _ = await asyncio.gather(
        start_all(start, [f"app-{number}" for number in range(1, instances + 1)]), migrate(database_url)
    )
    tokens = await sign_up(servers[0].base_url, config.users)
    clients_tokens = [tokens[index % len(tokens)] for index in range(config.clients)]
    path = f"/ws/rooms/{ROOM}" + ("?batch=1" if batch else "")
    return Deployment(servers, spread(servers, path, clients_tokens))


async def start_all(start: Callable[[str], Server], names: list[str]) -> list[Server]:
    return list(await asyncio.gather(*(asyncio.to_thread(start, name) for name in names)))


def spread(servers: list[Server], path: str, tokens: list[str | None]) -> list[Endpoint]:
    return [
        Endpoint(servers[index % len(servers)].ws_url + path, token) for index, token in enumerate(tokens)
    ]


async def migrate(database_url: str) -> None:
    """`alembic upgrade head`, as a deployment does."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "alembic",
        "upgrade",
        "head",
        cwd=PROJECT_DIR,
        env={**os.environ, "DATABASE_URL": database_url},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"alembic upgrade head failed:\n{output.decode(errors='replace')}")


async def create_postgres_database(stack: AsyncExitStack, server_url: str, name: str) -> str:
    """A new database on the server of `server_url`, dropped when `stack` closes; its SQLAlchemy URL."""
    admin_url = server_url.replace("postgresql+asyncpg://", "postgresql://", 1)
    connection = await asyncpg.connect(admin_url, timeout=5)
    try:
        await connection.execute(f'CREATE DATABASE "{name}"')
    finally:
        await connection.close()

    async def drop() -> None:
        connection = await asyncpg.connect(admin_url, timeout=5)
        try:
            await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await connection.close()

    stack.push_async_callback(drop)
    return f"postgresql+asyncpg://{urlsplit(admin_url).netloc}/{name}"


async def sign_up(base_url: str, users: int) -> list[str | None]:
    """Register `users` users, log each in, and create the room as the first; their tokens."""
    password = secrets.token_urlsafe(12)
    slots = asyncio.Semaphore(SIGN_UP_CONCURRENCY)
    async with httpx.AsyncClient(base_url=base_url, timeout=60) as client:

        async def sign_up_one(username: str) -> str:
            async with slots:
                registered = await client.post(
                    "/auth/register", json={"username": username, "password": password}
                )
                registered.raise_for_status()
                logged_in = await client.post(
                    "/auth/token", data={"username": username, "password": password}
                )
                logged_in.raise_for_status()
                token: str = logged_in.json()["access_token"]
                return token

        tokens = await asyncio.gather(*(sign_up_one(f"bench-{number:05d}") for number in range(users)))
        created = await client.post(
            "/rooms", json={"name": ROOM, "title": "Bench"}, headers={"Authorization": f"Bearer {tokens[0]}"}
        )
        created.raise_for_status()
    return list(tokens)
