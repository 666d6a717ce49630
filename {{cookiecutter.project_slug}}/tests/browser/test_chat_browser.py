"""The browser client in a real browser, on the deployed topology, each part a process on a loopback port:
{%- if cookiecutter.use_gateway == "y" %}
PostgreSQL migrated by Alembic, Redis, two app instances and the gateway in front of them.
{%- else %}
PostgreSQL migrated by Alembic, Redis, and two app instances.
{%- endif %}

alice and bob each have a browser context of their own. They register and log in, open a room, see each other
arrive and type, and exchange messages. Then the instance alice's socket is on is killed. Her client shows
that it is reconnecting; held offline meanwhile, so that it cannot come back too early, it misses what bob
says next.
{%- if cookiecutter.use_gateway == "y" %}
Back online, it reconnects through the gateway, which sends it to the other instance, and resumes after the
last message it showed:
{%- else %}
Back online, it reconnects to her instance, started again, and resumes after the last message it showed:
{%- endif %}
every message appears exactly once, in order. A screenshot of her chat view is written to the test's
`tmp_path`.
"""

from __future__ import annotations

import contextlib
import secrets
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

{% if cookiecutter.use_gateway == "y" -%}
import httpx
{% endif -%}
import pytest
from alembic import command
from alembic.config import Config
from playwright.sync_api import Browser, BrowserContext, Locator, expect
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

from ..processes import PROJECT_DIR, ProcessGroup, ServerProcess, free_port

pytestmark = [
    pytest.mark.slow,
    pytest.mark.parametrize("database_url", ["postgresql"], indirect=True),
    pytest.mark.usefixtures("chromium"),  # first, so that without it the test skips before starting anything
]

TIME_LIMIT_SECONDS = 120.0  # the whole test, start-up included: two apps and a gateway on a busy machine
ACTION_TIMEOUT_MS = 10_000
POLL_MS = 50
PASSWORD = "correct-horse-battery"
ROOM_TITLE, ROOM = "Lobby", "lobby"
VIEWPORT = {"width": 1100, "height": 760}
{%- if cookiecutter.use_gateway == "y" %}
LANDING_ATTEMPTS = 6
{%- endif %}


@dataclass
class Stack:
    """The running processes, and how to start an instance again."""

    group: ProcessGroup
    env: dict[str, str]
    started_at: float
    apps: list[ServerProcess]
{%- if cookiecutter.use_gateway == "y" %}
    gateway: ServerProcess

    def url_for(self, _person: str) -> str:
        """Everyone goes through the gateway."""
        return self.gateway.base_url
{%- else %}

    def url_for(self, person: str) -> str:
        """alice uses the first instance and bob the second; Redis joins their rooms."""
        return self.apps[0 if person == "alice" else 1].base_url

    def restart(self, app: ServerProcess) -> None:
        """Start a stopped instance again, on its port: where its clients come back to."""
        restarted = self.group.start_app(app.name, env=self.env, port=app.port, timeout=self.seconds_left())
        self.apps[self.apps.index(app)] = restarted
{%- endif %}

    def seconds_left(self) -> float:
        """What remains of the test's time limit."""
        return self.started_at + TIME_LIMIT_SECONDS - time.monotonic()

    def app_named(self, name: str | None) -> ServerProcess:
        return next(app for app in self.apps if app.name == name)


def migrate(database_url: str) -> None:
    """Alembic's `upgrade head`, in this process: one interpreter fewer to start on a busy machine."""
    config = Config()
    config.set_main_option("script_location", str(PROJECT_DIR / "migrations"))
    config.attributes["database_url"] = database_url
    command.upgrade(config, "head")


@pytest.fixture
def stack(database_url: str, redis_url: str, broker_channel: str, process_group: ProcessGroup) -> Stack:
    started_at = time.monotonic()
    env = {
        "ENVIRONMENT": "test",
        "SECRET_KEY": secrets.token_urlsafe(36),
        "DATABASE_URL": database_url,
        "BROKER_URL": redis_url,
        "BROKER_CHANNEL": broker_channel,
        "ARGON2_TIME_COST": "1",
        "ARGON2_MEMORY_COST": "1024",
        "AUTH_ATTEMPTS_PER_ADDRESS": "1000000",  # every client logs in from the same address
        "AUTH_ATTEMPTS_PER_USERNAME": "1000000",
    }
    limit = started_at + TIME_LIMIT_SECONDS
    # Each process spends seconds importing, so everything starts at once: the instances touch no table
    # before their first request, and start while the migrations run.
    ports = {name: free_port() for name in ("app1", "app2")}
    with ThreadPoolExecutor(4) as pool:
        migrating = pool.submit(migrate, database_url)
        starting = [
            pool.submit(process_group.start_app, name, env=env, port=port, timeout=limit - time.monotonic())
            for name, port in ports.items()
        ]
{%- if cookiecutter.use_gateway == "y" %}
        # Given the instances' ports, the gateway is ready as soon as one of them is.
        upstreams = ",".join(f"http://127.0.0.1:{port}" for port in ports.values())
        gateway = pool.submit(
            process_group.start_gateway,
            [],
            env={"GATEWAY_UPSTREAMS": upstreams},
            timeout=limit - time.monotonic(),
        )
{%- endif %}
        migrating.result()
        apps = [future.result() for future in starting]
{%- if cookiecutter.use_gateway == "y" %}
        return Stack(process_group, env, started_at, apps, gateway.result())
{%- else %}
    return Stack(process_group, env, started_at, apps)
{%- endif %}


class Person:
    """Someone using the browser client, in a browser context (a session) of their own."""

    def __init__(self, browser: Browser, name: str, base_url: str) -> None:
        self.name = name
        self.context: BrowserContext = browser.new_context(base_url=base_url, viewport=VIEWPORT)
        self.context.set_default_timeout(ACTION_TIMEOUT_MS)
        self.page = self.context.new_page()
        self.instances: list[str | None] = []  # the instance each chat socket reached, in order
        self._watch_chat_sockets()

    def _watch_chat_sockets(self) -> None:
        """Record the `X-Instance` header of each chat socket's handshake, which page scripts cannot see."""
        session = self.context.new_cdp_session(self.page)
        urls: dict[str, str] = {}

        def created(event: dict[str, Any]) -> None:
            urls[event["requestId"]] = event["url"]

        def answered(event: dict[str, Any]) -> None:
            if "/ws/rooms/" in urls.get(event["requestId"], ""):
                headers = {name.lower(): value for name, value in event["response"]["headers"].items()}
                self.instances.append(headers.get("x-instance"))

        session.on("Network.webSocketCreated", created)
        session.on("Network.webSocketHandshakeResponseReceived", answered)
        session.send("Network.enable")

    def by_test_id(self, test_id: str) -> Locator:
        return self.page.get_by_test_id(test_id)

    def sign_in(self, action: Literal["register", "login"], password: str = PASSWORD) -> None:
        self.by_test_id("login-username").fill(self.name)
        self.by_test_id("login-password").fill(password)
        self.by_test_id(f"{action}-button").click()

    def log_out(self) -> None:
        self.by_test_id("logout-button").click()
        expect(self.by_test_id("login-view")).to_be_visible()

    def create_room(self, title: str) -> None:
        self.by_test_id("new-room").locator("summary").click()
        self.by_test_id("room-title-input").fill(title)
        self.by_test_id("create-room-button").click()
        expect(self.by_test_id("room-title")).to_have_text(title)

    def open_room(self, name: str) -> None:
        self.by_test_id("refresh-rooms").click()
        self.page.locator(f'[data-testid="room-item"][data-room="{name}"]').click()

    def leave_room(self) -> None:
        self.page.evaluate("location.hash = '#/'")
        expect(self.by_test_id("room-view")).to_be_hidden()

    def wait_for_chat_socket(self, count: int) -> str | None:
        """The instance of the `count`th chat socket, once it is open; `count` starts at 1."""
        expect(self.by_test_id("send-button")).to_be_enabled()
        deadline = time.monotonic() + ACTION_TIMEOUT_MS / 1000
        while len(self.instances) < count and time.monotonic() < deadline:
            self.page.wait_for_timeout(POLL_MS)  # lets Playwright deliver the handshake's event
        assert len(self.instances) >= count, f"{self.name}'s chat socket #{count} did not open"
        return self.instances[count - 1]

    def say(self, text: str) -> None:
        """Type and send a message with Enter, then see it come back from the server."""
        self.by_test_id("message-input").fill(text)
        self.by_test_id("message-input").press("Enter")
        expect(self.message(self.name, text)).to_have_count(1)

    def message(self, author: str, text: str) -> Locator:
        return self.page.locator(f'[data-testid="message"][data-user="{author}"]').filter(has_text=text)

    def presence(self, user: str) -> Locator:
        return self.page.locator(f'[data-testid="presence-item"][data-user="{user}"]')

    def resume(self) -> None:
        """Wait for the chat socket to be back, pressing "Retry now" whenever the client offers it: the
        backoff may have grown long while the browser was offline."""
        deadline = time.monotonic() + ACTION_TIMEOUT_MS / 1000
        retry = self.by_test_id("reconnect-now")
        while self.page.locator(".connection").get_attribute("data-state") != "resumed":
            assert time.monotonic() < deadline, f"{self.name}'s chat did not resume"
            if retry.is_visible():
                with contextlib.suppress(PlaywrightTimeoutError):
                    retry.click(timeout=POLL_MS * 10)  # it hides as soon as an attempt starts on its own
            self.page.wait_for_timeout(POLL_MS)

    def wait_for_connection_state(self, state: str) -> None:
        """Wait until the header's connection indicator is in `state`, checked on every frame drawn."""
        self.page.wait_for_function(
            "state => document.querySelector('.connection').dataset.state === state", arg=state, polling="raf"
        )


@pytest.fixture
def people(stack: Stack, browser: Browser) -> Iterator[tuple[Person, Person]]:
    people = (Person(browser, "alice", stack.url_for("alice")), Person(browser, "bob", stack.url_for("bob")))
    try:
        yield people
    finally:
        for person in people:
            person.context.close()


def test_two_people_chat_and_a_reconnect_loses_no_message(
    stack: Stack, people: tuple[Person, Person], tmp_path: Path
) -> None:
    alice, bob = people
    for person in people:
        person.page.goto("/")
        person.sign_in("register")
        expect(person.by_test_id("current-user")).to_have_text(person.name)

    # Logging in again, after a wrong password that the client explains.
    bob.log_out()
    bob.sign_in("login", password="not-" + PASSWORD)
    expect(bob.by_test_id("login-error")).to_have_text("Wrong username or password.")
    bob.sign_in("login")
    expect(bob.by_test_id("current-user")).to_have_text("bob")

    alice.create_room(ROOM_TITLE)
    alice_instance = alice.wait_for_chat_socket(1)
    bob.open_room(ROOM)
    bob_sockets = 1
    bob_instance = bob.wait_for_chat_socket(bob_sockets)
{%- if cookiecutter.use_gateway == "y" %}
    # bob must stay connected when alice's instance dies: he goes in again until the gateway, which takes
    # turns over the instances request by request, sends him to the other one.
    for attempt in range(LANDING_ATTEMPTS):
        if bob_instance != alice_instance:
            break
        if attempt % 2:
            httpx.get(stack.gateway.base_url + "/healthz", timeout=5).raise_for_status()  # shifts the turn
        bob.leave_room()
        bob.open_room(ROOM)
        bob_sockets += 1
        bob_instance = bob.wait_for_chat_socket(bob_sockets)
{%- endif %}
    assert bob_instance != alice_instance, "alice and bob should be on different instances"

    for person in people:
        expect(person.by_test_id("room-title")).to_have_text(ROOM_TITLE)
        expect(person.presence("alice")).to_be_visible()
        expect(person.presence("bob")).to_be_visible()

    bob.by_test_id("message-input").fill("Hello alice")
    expect(alice.by_test_id("typing-indicator")).to_have_text("bob is typing…")
    bob.by_test_id("message-input").press("Enter")
    expect(alice.message("bob", "Hello alice")).to_have_count(1)
    expect(alice.by_test_id("typing-indicator")).to_have_text("")
    alice.say("Hi bob")
    expect(bob.message("alice", "Hi bob")).to_have_count(1)

    # alice's instance dies without a word.
    victim = stack.app_named(alice_instance)
    victim.kill()
    alice.wait_for_connection_state("waiting")
    expect(alice.by_test_id("connection-status")).to_contain_text("Reconnecting")
    alice.context.set_offline(True)
    said_while_away = [f"While you were away, {number}" for number in range(1, 4)]
    for text in said_while_away:
        bob.say(text)
    expect(alice.message("bob", said_while_away[0])).to_have_count(0)
{%- if cookiecutter.use_gateway == "n" %}
    stack.restart(victim)
{%- endif %}
    alice.context.set_offline(False)
    alice.resume()
    expect(alice.by_test_id("connection-status")).to_have_text("Resumed")
{%- if cookiecutter.use_gateway == "y" %}
    assert alice.instances[-1] == bob_instance, "the gateway should have sent alice to the other instance"
{%- endif %}

    said_after = [f"Welcome back, {number}" for number in range(1, 3)]
    for text in said_after:
        bob.say(text)
    everything = ["Hello alice", "Hi bob", *said_while_away, *said_after]
    expect(alice.by_test_id("message-text")).to_have_text(everything)
    seqs = alice.by_test_id("message").evaluate_all("items => items.map((item) => Number(item.dataset.seq))")
    assert seqs == list(range(1, len(everything) + 1)), seqs
    expect(alice.presence("bob")).to_be_visible()

    screenshot = tmp_path / "chat-alice.png"
    alice.page.screenshot(path=screenshot)
    assert screenshot.stat().st_size > 0
    assert stack.seconds_left() > 0, f"the test took over {TIME_LIMIT_SECONDS} s"
