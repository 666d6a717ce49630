"""The app's wiring: the browser client is served, and `/readyz` reports the database and the broker."""

from __future__ import annotations

import pytest
from asgi_lifespan import LifespanManager
from httpx import ASGITransport, AsyncClient

from {{ cookiecutter.package_name }}.main import create_app
from {{ cookiecutter.package_name }}.settings import Settings

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
