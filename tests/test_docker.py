"""The default bake's image and compose stack, built and run for real, then faults on its containers.

The unmodified `Dockerfile` and `docker-compose.yml` are built and brought up under a unique project name;
clients on the host talk to the gateway through its published port. Anything specific to the machine (the
build network, stand-in base images) comes from the environment (`.ci/run`), never from the generated files.
Everything is torn down, volumes included, whatever happens.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from docker_stack import ComposeStack, docker_or_skip
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

pytestmark = pytest.mark.docker

# Every character that breaks a URL's userinfo unless quoted; `$` is left out (compose interpolates it).
POSTGRES_PASSWORD = "p@ss:w/rd#%?" + secrets.token_urlsafe(8)
ADMIN, ADMIN_PASSWORD = "admin", secrets.token_urlsafe(16)
ROOM = "docker"
WAIT = 60.0  # generous: the machine is shared
TALK_INTERVAL = 0.5  # 2 a second: a stall of up to 10 s stays within the rate limit's burst (20)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def stack(cookies_session: Any) -> Iterator[ComposeStack]:
    docker_or_skip()
    result = cookies_session.bake(extra_context={"use_docker": "y", "use_gateway": "y"})
    assert result.exception is None, result.exception
    project_dir = Path(result.project_path)
    subprocess.run(
        ["make", "env", f"PYTHON={sys.executable}"], cwd=project_dir, check=True, capture_output=True
    )
    dotenv = (project_dir / ".env").read_text()
    assert "change-me" not in dotenv
    # Single quotes: the same literal value for Compose v1 (python-dotenv) and v2.
    dotenv = "\n".join(
        f"POSTGRES_PASSWORD='{POSTGRES_PASSWORD}'" if line.startswith("POSTGRES_PASSWORD=") else line
        for line in dotenv.splitlines()
    )
    dotenv += f"\nFIRST_SUPERUSER={ADMIN}\nFIRST_SUPERUSER_PASSWORD={ADMIN_PASSWORD}\n"
    (project_dir / ".env").write_text(dotenv)

    stack = ComposeStack(project_dir, name=f"chatdocker{secrets.token_hex(4)}", gateway_port=free_port())
    try:
        stack.timed("build", "build")
        stack.timed("up", "up", "-d")
        yield stack
    finally:
        stack.down()


# --- clients ----------------------------------------------------------------------------------------------


@dataclass
class Session:
    """A user's HTTP client of the gateway, logged in."""

    username: str
    http: httpx.AsyncClient
    token: str = ""

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


async def sign_up(http: httpx.AsyncClient, username: str) -> Session:
    password = secrets.token_urlsafe(12)
    response = await http.post("/auth/register", json={"username": username, "password": password})
    assert response.status_code == 201, response.text
    return await log_in(http, username, password)


async def log_in(http: httpx.AsyncClient, username: str, password: str) -> Session:
    response = await http.post("/auth/token", data={"username": username, "password": password})
    assert response.status_code == 200, response.text
    return Session(username, http, response.json()["access_token"])


class ClosedBefore(AssertionError):
    """The connection was closed before what was awaited came."""


@dataclass
class Frames:
    """Frames of one WebSocket, read by a task; waiters are woken at each one."""

    websocket: ClientConnection
    received: list[dict[str, Any]] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    closed_at: float | None = None
    reader: asyncio.Task[None] | None = None

    @property
    def instance(self) -> str:
        response = self.websocket.response
        assert response is not None
        return str(response.headers["x-instance"])

    def start(self) -> Frames:
        self.reader = asyncio.create_task(self._read())
        return self

    async def _read(self) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for frame in self.websocket:
                self.received.append(json.loads(frame))
                self.changed.set()
        self.closed_at = time.monotonic()
        self.changed.set()

    async def until(self, what: str, predicate: Callable[[], bool], timeout: float = WAIT) -> None:
        async with asyncio.timeout(timeout):
            while not predicate():
                if self.closed_at is not None:
                    raise ClosedBefore(f"closed ({self.websocket.close_code}) before {what}")
                self.changed.clear()
                await self.changed.wait()

    async def closed(self, timeout: float = WAIT) -> int | None:
        async with asyncio.timeout(timeout):
            while self.closed_at is None:
                self.changed.clear()
                await self.changed.wait()
        return self.websocket.close_code

    async def close(self) -> None:
        await self.websocket.close()
        if self.reader is not None:
            await self.reader


async def open_socket(stack: ComposeStack, path: str, session: Session) -> Frames:
    url = f"ws://127.0.0.1:{stack.gateway_port}{path}"
    websocket = await connect(url, additional_headers=session.auth, open_timeout=15, close_timeout=5)
    return Frames(websocket).start()


@dataclass
class RoomMember:
    """A user in the room across reconnections: every chat message seen, over every connection."""

    session: Session
    stack: ComposeStack
    connections: list[Frames] = field(default_factory=list)

    @property
    def socket(self) -> Frames:
        return self.connections[-1]

    @property
    def messages(self) -> list[dict[str, Any]]:
        return [
            frame
            for frames in self.connections
            for frame in frames.received
            if frame["type"] == "chat.message"
        ]

    @property
    def refused(self) -> list[dict[str, Any]]:
        return [frame for frames in self.connections for frame in frames.received if frame["type"] == "error"]

    def texts(self) -> list[str]:
        return [message["text"] for message in self.messages]

    @property
    def last_seq(self) -> int | None:
        messages = self.messages
        return messages[-1]["seq"] if messages else None

    async def join(
        self, *, avoid: str | None = None, since: int | None = None, within: float = WAIT
    ) -> float:
        """Connect with `since` (by default the last message seen), on another instance than `avoid` if
        given; retries while the gateway has no instance for it. Returns how long it took."""
        started = time.monotonic()
        since = self.last_seq if since is None else since
        path = f"/ws/rooms/{ROOM}" + (f"?since={since}" if since is not None else "")
        async with asyncio.timeout(within):
            while True:
                try:
                    frames = await open_socket(self.stack, path, self.session)
                except (OSError, InvalidStatus, TimeoutError, ConnectionClosed):
                    await asyncio.sleep(0.2)  # the gateway has not seen the instance go yet: try again
                    continue
                if avoid is not None and frames.instance == avoid:
                    await frames.close()
                    continue
                # Presence is sent once the connection is in the room: what is said from now on reaches it.
                # Closed before (1014, 1012): the gateway sent it to an instance going away; try again.
                with contextlib.suppress(ClosedBefore):
                    await frames.until("presence", partial(has_presence, frames))
                if frames.closed_at is not None:
                    await asyncio.sleep(0.2)
                    continue
                self.connections.append(frames)
                return time.monotonic() - started

    async def say(self, text: str) -> None:
        await self.socket.websocket.send(json.dumps({"type": "chat.message", "text": text}))

    async def has_heard(self, texts: list[str], timeout: float = WAIT) -> None:
        wanted = set(texts)
        try:
            await self.socket.until("hearing everything", lambda: wanted <= set(self.texts()), timeout)
        except TimeoutError:
            missing = sorted(wanted - set(self.texts()))
            raise AssertionError(
                f"{self.session.username} never heard {missing}; refused: {self.refused}"
            ) from None

    def check_no_gap_no_duplicate(self, stored: list[dict[str, Any]], connections: int = 0) -> None:
        """What this user saw over its last `connections` connections (0: all), the first one's messages and
        the later ones' resumed with `since`, is the room's history from its first message on."""
        seen = [
            frame["seq"]
            for frames in self.connections[-connections:]
            for frame in frames.received
            if frame["type"] == "chat.message"
        ]
        assert len(seen) == len(set(seen)), f"{self.session.username} saw duplicates: {seen}"
        expected = [message["seq"] for message in stored if message["seq"] >= seen[0]]
        assert seen == expected, f"{self.session.username} saw {seen}, the room holds {expected}"


def has_presence(frames: Frames) -> bool:
    return any(frame["type"] == "presence.state" for frame in frames.received)


async def keep_saying(member: RoomMember, prefix: str, said: list[str], stop: asyncio.Event) -> None:
    """Say `<prefix> 0`, `<prefix> 1`... until `stop`; a send on a connection that closed is not counted."""
    while not stop.is_set():
        text = f"{prefix} {len(said)}"
        with contextlib.suppress(ConnectionClosed):
            await member.say(text)
            said.append(text)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), TALK_INTERVAL)


async def until_healthy(stack: ComposeStack, service: str, http: httpx.AsyncClient) -> None:
    """Until `service`'s healthcheck passes and the gateway counts every instance healthy again."""
    async with asyncio.timeout(WAIT * 2):
        while True:
            health = await asyncio.to_thread(stack.inspect, service)
            ready = (await http.get("/gateway/readyz")).json()
            if health.get("Health", {}).get("Status") == "healthy" and (  # type: ignore[union-attr]
                ready["healthy_upstreams"] == ready["upstreams"]
            ):
                return
            await asyncio.sleep(0.5)  # polling a container's health: there is no event to wait for


# --- the scenario -------------------------------------------------------------------------------------------


def test_the_stack_serves_chat_across_instances_and_survives_faults(stack: ComposeStack) -> None:
    figures: dict[str, Any] = {
        "build_seconds": round(stack.timings["build"], 1),
        "up_seconds": round(stack.timings["up"], 1),
    }
    try:
        started = time.monotonic()
        output = stack.compose("exec", "-T", "app1", "python", "-", stdin=ci_smoke_test(stack.project_dir))
        assert "compose smoke test passed" in output, output
        figures["ci_smoke_test_seconds"] = round(time.monotonic() - started, 1)
        asyncio.run(scenario(stack, figures))
    except BaseException:
        print(f"figures so far: {json.dumps(figures)}\n{stack.logs()}")
        raise
    print(f"\ndocker stack figures: {json.dumps(figures)}")


def ci_smoke_test(project_dir: Path) -> str:
    """The Python script of the generated GitHub workflow's smoke test, run in the app's container."""
    workflow = yaml.safe_load((project_dir / ".github" / "workflows" / "ci.yml").read_text())
    (step,) = (step for step in workflow["jobs"]["docker"]["steps"] if step.get("name") == "Smoke test")
    command: str = step["run"]
    return command.split("<<'EOF'\n", 1)[1].rsplit("EOF", 1)[0]


async def scenario(stack: ComposeStack, figures: dict[str, Any]) -> None:
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=30) as http:
        await gateway_ready(http)
        alice = RoomMember(await sign_up(http, "alice"), stack)
        bob = RoomMember(await sign_up(http, "bob"), stack)
        admin = await log_in(http, ADMIN, ADMIN_PASSWORD)
        created = await http.post(
            "/rooms", json={"name": ROOM, "title": "Docker"}, headers=alice.session.auth
        )
        assert created.status_code == 201, created.text

        await chat_across_instances(alice, bob, http)
        await notification_reaches_the_user(stack, bob.session, admin)
        figures["kill_app"] = await kill_an_app(stack, alice, bob, http)
        figures["restart_redis"] = await restart_redis(stack, alice, bob, http)
        figures["stop_app"] = await stop_an_app(stack, alice, bob, http)
        figures["restart_postgres"] = await restart_postgres(stack, alice, http)


async def gateway_ready(http: httpx.AsyncClient) -> None:
    async with asyncio.timeout(WAIT):
        while True:
            with contextlib.suppress(httpx.TransportError):
                response = await http.get("/gateway/readyz")
                if response.status_code == 200 and response.json()["healthy_upstreams"] == 2:
                    return
            await asyncio.sleep(0.5)  # nothing to wait on but the answer


async def chat_across_instances(alice: RoomMember, bob: RoomMember, http: httpx.AsyncClient) -> None:
    await alice.join()
    await bob.join(avoid=alice.socket.instance)
    assert {alice.socket.instance, bob.socket.instance} == {"app1", "app2"}
    await alice.say("hello from alice")
    await bob.has_heard(["hello from alice"])
    await bob.say("hello from bob")
    await alice.has_heard(["hello from alice", "hello from bob"])
    history = await http.get(f"/rooms/{ROOM}/messages", headers=alice.session.auth)
    assert history.status_code == 200, history.text
    assert [(m["user"], m["text"]) for m in history.json()] == [
        ("alice", "hello from alice"),
        ("bob", "hello from bob"),
    ]
    assert (
        [m["seq"] for m in history.json()]
        == [m["seq"] for m in alice.messages]
        == [m["seq"] for m in bob.messages]
    )


async def notification_reaches_the_user(stack: ComposeStack, bob: Session, admin: Session) -> None:
    notifications = await open_socket(stack, "/ws/notifications", bob)
    # Answered after the connection's own topic is subscribed: a publish from now on reaches it.
    await notifications.websocket.send(json.dumps({"type": "subscribe", "topic": "news/docker"}))
    await notifications.until(
        "subscribed", lambda: any(f["type"] == "subscribed" for f in notifications.received)
    )
    data = {"title": "Hello", "text": "from the stack"}
    response = await admin.http.post(
        "/notifications", json={"username": "bob", "data": data}, headers=admin.auth
    )
    assert response.status_code == 202, response.text
    await notifications.until(
        "notification",
        lambda: any(f["type"] == "notification" and f["data"] == data for f in notifications.received),
    )
    await notifications.close()


async def kill_an_app(
    stack: ComposeStack, alice: RoomMember, bob: RoomMember, http: httpx.AsyncClient
) -> dict[str, Any]:
    """`docker kill` alice's instance while bob talks: alice resumes on the other with `since`."""
    victim = alice.socket.instance
    said: list[str] = []
    stop = asyncio.Event()
    talker = asyncio.create_task(keep_saying(bob, "during kill", said, stop))
    await alice.socket.until("bob talking", lambda: len(said) > 0 and said[0] in alice.texts())
    container = stack.container(victim)
    killed_at = time.monotonic()
    await asyncio.to_thread(stack.docker, "kill", container)
    await alice.socket.closed()
    await alice.join()
    assert alice.socket.instance != victim
    await alice.has_heard(list(said))  # what was said until she was back
    resumed = time.monotonic() - killed_at
    resumed_at = len(said)
    await alice.socket.until(
        "bob heard live again", lambda: len(set(said[resumed_at:]) & set(alice.texts())) >= 3
    )
    stop.set()
    await talker
    await alice.has_heard(said)
    await bob.has_heard(said)
    stored = await history(http, alice.session)
    alice.check_no_gap_no_duplicate(stored)
    bob.check_no_gap_no_duplicate(stored)
    await asyncio.to_thread(stack.compose, "start", victim)
    await until_healthy(stack, victim, http)
    return {"resume_seconds": round(resumed, 2), "sent": len(said), "lost": 0, "duplicates": 0}


async def restart_redis(
    stack: ComposeStack, alice: RoomMember, bob: RoomMember, http: httpx.AsyncClient
) -> dict[str, Any]:
    """`docker-compose restart redis` while both talk from different instances.

    No message is refused: each is stored. What is said once both instances are ready again reaches both
    clients live. Each client then resumes with `since=<the last seq it saw before the restart>` and is
    replayed exactly the room's messages after it, each once: with what it heard live, that is every stored
    message, none missing (pub/sub keeps nothing for an instance not yet subscribed again; the history does).
    """
    await bob.socket.close()
    await bob.join(avoid=alice.socket.instance)
    members = {"alice": alice, "bob": bob}
    before = {name: member.last_seq for name, member in members.items()}
    stop = asyncio.Event()
    said: dict[str, list[str]] = {name: [] for name in members}
    talkers = [
        asyncio.create_task(keep_saying(member, f"{name} during redis restart", said[name], stop))
        for name, member in members.items()
    ]
    started = time.monotonic()
    await asyncio.to_thread(stack.compose, "restart", "redis")
    restart_seconds = time.monotonic() - started
    await until_ready(stack, ["app1", "app2"])
    ready_seconds = time.monotonic() - started
    stop.set()
    await asyncio.gather(*talkers)
    refused = [frame.get("detail") for member in members.values() for frame in member.refused]
    assert not refused, refused

    after = [f"{name} after redis restart" for name in members]
    for name, member in members.items():
        await member.say(f"{name} after redis restart")
    for member in members.values():
        await member.has_heard(after)  # live, on both instances
    everything = said["alice"] + said["bob"] + after
    stored = await history(http, alice.session)
    unstored = set(everything) - {message["text"] for message in stored}
    assert not unstored, f"said, not refused, and not stored: {sorted(unstored)}"

    missed_live: dict[str, int] = {}
    for name, member in members.items():
        live = member.socket.received
        live_ids = [frame["seq"] for frame in live if frame["type"] == "chat.message"]
        assert len(live_ids) == len(set(live_ids)), f"{name} heard a message twice: {live_ids}"
        heard = set(member.texts())
        missed_live[name] = len(set(everything) - heard)
        await member.socket.close()
        await member.join(since=before[name])
        expected = [message["seq"] for message in stored if message["seq"] > (before[name] or 0)]
        await member.socket.until("the replay", partial(holds_at_least, member.socket, len(expected)))
        assert chat_ids(member.socket) == expected, f"{name}'s replay is not the room's history after it"
        assert set(everything) <= heard | set(member.texts())
    return {
        "restart_seconds": round(restart_seconds, 2),
        "instances_ready_after_seconds": round(ready_seconds, 2),
        "sent": len(everything),
        "missed_live_then_replayed": missed_live,
        "lost": 0,
        "duplicates": 0,
    }


def holds_at_least(frames: Frames, count: int) -> bool:
    return len(chat_ids(frames)) >= count


def chat_ids(frames: Frames) -> list[int]:
    return [frame["seq"] for frame in frames.received if frame["type"] == "chat.message"]


async def until_ready(stack: ComposeStack, services: list[str]) -> None:
    """Until each instance's `/readyz` answers 200 (its broker listener is subscribed again)."""
    async with asyncio.timeout(WAIT):
        for service in services:
            while not await asyncio.to_thread(stack.answers, service, "/readyz"):
                await asyncio.sleep(0.2)  # asked from outside: there is no event to wait for


async def stop_an_app(
    stack: ComposeStack, alice: RoomMember, bob: RoomMember, http: httpx.AsyncClient
) -> dict[str, Any]:
    """`docker stop` alice's instance: 1012 to its clients, exit 0 within the grace period, and alice resumes
    on the other instance with no gap."""
    victim = alice.socket.instance
    said: list[str] = []
    stop = asyncio.Event()
    talker = asyncio.create_task(keep_saying(bob, "during stop", said, stop))
    await alice.socket.until("bob talking", lambda: len(said) > 0 and said[0] in alice.texts())
    container = stack.container(victim)
    started = time.monotonic()
    stopping = asyncio.create_task(asyncio.to_thread(stack.docker, "stop", "--time", "10", container))
    close_code = await alice.socket.closed()
    await stopping
    stop_seconds = time.monotonic() - started
    state = await asyncio.to_thread(stack.inspect, victim)
    assert close_code == 1012
    assert state["ExitCode"] == 0, state
    assert stop_seconds < 10
    resumed = await alice.join()
    stop.set()
    await talker
    await alice.has_heard(said)
    stored = await history(http, alice.session)
    alice.check_no_gap_no_duplicate(stored, connections=2)
    bob.check_no_gap_no_duplicate(stored, connections=1)
    await asyncio.to_thread(stack.compose, "start", victim)
    await until_healthy(stack, victim, http)
    return {
        "close_code": close_code,
        "exit_code": state["ExitCode"],
        "stop_seconds": round(stop_seconds, 2),
        "resume_seconds": round(resumed, 2),
        "sent": len(said),
        "lost": 0,
        "duplicates": 0,
    }


async def restart_postgres(stack: ComposeStack, alice: RoomMember, http: httpx.AsyncClient) -> dict[str, Any]:
    """PostgreSQL stopped: the REST routes answer 503 with Retry-After; started again: they recover."""
    await asyncio.to_thread(stack.compose, "stop", "postgres")
    async with asyncio.timeout(WAIT):
        while True:
            down = await http.get("/rooms", headers=alice.session.auth)
            if down.status_code == 503:
                break
            await asyncio.sleep(0.2)  # pool connections may live on for a moment
    assert down.headers["retry-after"].isdecimal(), down.headers
    started = time.monotonic()
    await asyncio.to_thread(stack.compose, "start", "postgres")
    async with asyncio.timeout(WAIT * 2):
        while (await http.get("/rooms", headers=alice.session.auth)).status_code != 200:
            await asyncio.sleep(0.2)  # until the server accepts connections again
    recovered = time.monotonic() - started
    await alice.say("after the database came back")
    await alice.has_heard(["after the database came back"])
    assert "after the database came back" in [m["text"] for m in await history(http, alice.session)]
    return {
        "status_while_down": down.status_code,
        "retry_after": down.headers["retry-after"],
        "recovered_after_start_seconds": round(recovered, 2),
    }


async def history(http: httpx.AsyncClient, session: Session) -> list[dict[str, Any]]:
    """Every message of the room, from PostgreSQL, oldest first."""
    messages: list[dict[str, Any]] = []
    while True:
        after = {"after": messages[-1]["seq"] if messages else 0}  # without it, the newest page comes
        page = await http.get(f"/rooms/{ROOM}/messages", params={**after, "limit": 100}, headers=session.auth)
        assert page.status_code == 200, page.text
        if not page.json():
            return messages
        messages += page.json()
