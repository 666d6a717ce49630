"""`/readyz` names the dependency that is down, while `/healthz` keeps saying the process is alive.

An orchestrator restarts what fails `/healthz` and stops routing to what fails `/readyz`: an outage of the
database or the broker must take instances out of rotation, not restart them all.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from asgi_lifespan import LifespanManager
from httpx import ASGITransport, AsyncClient

from {{ cookiecutter.package_name }}.main import create_app
from {{ cookiecutter.package_name }}.settings import Settings

# Port 1 on loopback: nothing listens there, so connecting fails at once.
UNREACHABLE_DATABASE = "postgresql+asyncpg://postgres@127.0.0.1:1/nothing"
UNREACHABLE_BROKER = "redis://127.0.0.1:1/0"


@asynccontextmanager
async def client_of(settings: Settings, **overrides: str) -> AsyncIterator[AsyncClient]:
    app = create_app(settings.model_copy(update=overrides))
    async with (
        LifespanManager(app),
        AsyncClient(transport=ASGITransport(app=app), base_url="http://test") as client,
    ):
        yield client


async def test_an_unreachable_database_is_named(settings: Settings) -> None:
    async with client_of(settings, database_url=UNREACHABLE_DATABASE) as client:
        ready, alive = await client.get("/readyz"), await client.get("/healthz")
    assert ready.status_code == 503
    body = ready.json()
    assert body["status"] == "unavailable"
    assert body["checks"]["database"].startswith("error: ")
    assert body["checks"]["broker"] == "ok"
    assert alive.status_code == 200


async def test_every_dependency_down_is_named(settings: Settings) -> None:
    unreachable = {"database_url": UNREACHABLE_DATABASE, "broker_url": UNREACHABLE_BROKER}
    async with client_of(settings, **unreachable) as client:
        ready, alive = await client.get("/readyz"), await client.get("/healthz")
    assert ready.status_code == 503
    checks = ready.json()["checks"]
    assert checks["database"].startswith("error: ")
    assert checks["broker"] == "error: broker reconnecting"
    assert alive.status_code == 200


async def test_a_ready_instance_says_so(http: AsyncClient) -> None:
    ready = await http.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ok", "checks": {"database": "ok", "broker": "ok"}}
