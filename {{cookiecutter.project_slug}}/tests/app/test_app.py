"""The app's wiring: the browser client is served, `/readyz` reports the database and the broker, and the
garbage collector is settled once the app has started."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest
from asgi_lifespan import LifespanManager
from httpx import ASGITransport, AsyncClient

from {{ cookiecutter.package_name }}.main import create_app
from {{ cookiecutter.package_name }}.settings import Settings

from .support import create_tables

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


async def test_the_browser_client_is_served_at_the_root(client: AsyncClient) -> None:
    page = await client.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert 'src="static/js/app.js"' in page.text  # relative, so the client works under any path prefix
    for asset in ("static/js/app.js", "static/js/chat.js", "static/styles.css", "static/favicon.svg"):
        assert (await client.get(f"/{asset}")).status_code == 200, asset
    assert "/" not in (await client.get("/openapi.json")).json()["paths"]


@pytest.mark.parametrize("broker_url", ["memory", "redis"], indirect=True)
async def test_readyz_reports_the_database_and_the_broker(client: AsyncClient) -> None:
    ready = await client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ok", "checks": {"database": "ok", "broker": "ok"}}


async def test_readyz_is_unavailable_while_the_broker_is_unreachable(settings: Settings) -> None:
    unreachable = settings.model_copy(update={"broker_url": "redis://127.0.0.1:1/0"})
    app = create_app(unreachable)
    async with (
        LifespanManager(app),
        AsyncClient(transport=ASGITransport(app=app), base_url="http://test") as client,
    ):
        ready = await client.get("/readyz")
    assert ready.status_code == 503
    assert ready.json()["checks"] == {"database": "ok", "broker": "error: broker reconnecting"}


GARBAGE_COLLECTOR_SCRIPT = """
import asyncio, gc, json, sys
from asgi_lifespan import LifespanManager
from {{ cookiecutter.package_name }}.main import create_app
from tests.app.support import settings_for_tests

async def main() -> None:
    before = [gc.get_freeze_count(), gc.get_threshold()[0]]
    async with LifespanManager(create_app(settings_for_tests(sys.argv[1], "gc-check"))):
        print(json.dumps([before, [gc.get_freeze_count(), gc.get_threshold()[0]]]))

asyncio.run(main())
"""


def test_a_started_app_freezes_what_it_loaded_and_collects_young_objects_less_often(
    database_url: str,
) -> None:
    """In a process of its own (Python 3.12 freezes a few hundred objects of its own at start-up)."""
    asyncio.run(create_tables(database_url))
    project = Path(__file__).parents[2]
    done = subprocess.run(
        [sys.executable, "-c", GARBAGE_COLLECTOR_SCRIPT, database_url],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    before, after = json.loads(done.stdout.splitlines()[-1])
    (frozen_before, threshold_before), (frozen_after, threshold_after) = before, after
    assert threshold_before < 10_000  # Python's own: 700, or 2,000 from 3.13
    assert frozen_after - frozen_before > 10_000  # the modules, classes and functions loaded to start
    assert threshold_after == 10_000
