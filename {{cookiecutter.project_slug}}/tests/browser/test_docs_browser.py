"""The HTTP API's documentation works without internet: /docs loads Swagger UI from the app itself.

A real Chromium opens it with every request to anything but the app's own address refused, and must show
the operations of the OpenAPI document, having asked for nothing elsewhere.
"""

from __future__ import annotations

import secrets
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from playwright.sync_api import Browser, Page, Route, expect

from ..processes import ProcessGroup, ServerProcess

pytestmark = [
    pytest.mark.slow,
    pytest.mark.usefixtures("chromium"),  # first, so that without it the test skips before starting anything
]


@pytest.fixture
def app(process_group: ProcessGroup, tmp_path: Path) -> ServerProcess:
    env = {
        "ENVIRONMENT": "test",
        "SECRET_KEY": secrets.token_urlsafe(36),
        "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'docs.db'}",
        "BROKER_URL": "memory://",
    }
    return process_group.start_app("docs", env=env)


def open_offline(browser: Browser, url: str, refused: list[str]) -> Page:
    """A page at `url` in a context where a request to any host but the app's is refused and recorded."""
    context = browser.new_context()

    def loopback_only(route: Route) -> None:
        if urlsplit(route.request.url).hostname == "127.0.0.1":
            route.continue_()
        else:
            refused.append(route.request.url)
            route.abort()

    context.route("**/*", loopback_only)
    page = context.new_page()
    page.goto(url)
    return page


def test_swagger_ui_shows_the_operations_offline(browser: Browser, app: ServerProcess) -> None:
    refused: list[str] = []
    page = open_offline(browser, f"{app.base_url}/docs", refused)
    expect(page.locator(".opblock-summary-path", has_text="/users/me").first).to_be_visible()
    expect(page.locator(".opblock-summary-path", has_text="/rooms").first).to_be_visible()
    assert refused == []


def test_redoc_is_not_served(app: ServerProcess) -> None:
    """ReDoc would fetch its logo from a CDN: the service offers Swagger UI only."""
    assert httpx.get(f"{app.base_url}/redoc").status_code == 404
