"""A headless Chromium for the browser tests: Debian's `chromium` package, driven by Playwright.

Playwright never downloads a browser here: it launches the one at `CHROMIUM_PATH` (`/usr/bin/chromium`).
Without it the browser tests are skipped, unless `REQUIRE_SERVICES=1`, where they fail.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, expect, sync_playwright

CHROMIUM_PATH = Path(os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium"))
# What a page may take to show what a test expects, when the machine is busy with other work.
EXPECT_TIMEOUT_MS = 10_000
# No sandbox: tests may run as root in a container, where Chromium's sandbox cannot start. The rest keeps
# the browser from reaching out to anything but the servers under test.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]


@pytest.fixture
def chromium() -> Path:
    """The browser's executable; without it the test is skipped, or fails with `REQUIRE_SERVICES=1`."""
    if not CHROMIUM_PATH.exists():
        message = f"{CHROMIUM_PATH} is missing; install Debian's `chromium` package"
        if os.environ.get("REQUIRE_SERVICES") == "1":
            pytest.fail(f"{message} (REQUIRE_SERVICES=1)")
        pytest.skip(message)
    return CHROMIUM_PATH


@pytest.fixture
def browser(chromium: Path) -> Iterator[Browser]:
    """A headless Chromium. Request it after the fixtures that run an event loop (`asyncio.run`): while
    Playwright's synchronous API is started, its own loop counts as running in this thread."""
    expect.set_options(timeout=EXPECT_TIMEOUT_MS)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(chromium), headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()
