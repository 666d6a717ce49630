"""Two app instances on a Redis Cluster, each given a different node: chat, presence, history{% if cookiecutter.use_notifications == "y" %} and
notifications, wildcard filters included{% endif %}."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import ClientConnection

from {{ cookiecutter.package_name }}.consumers.chat import room_group

from ..processes import ProcessGroup
from ..realtime.cluster import LocalCluster, local_cluster
from .support import create_tables
from .ws_support import (
    connect_ws,
    instance_env,
    log_in,
    receive_json,
    receive_presence,
    receive_type,
    send_json,
)

pytestmark = [pytest.mark.slow, pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)]


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    with local_cluster(tmp_path / "cluster") as started:
        yield started


async def test_instances_on_different_nodes_of_a_cluster_chat_and_notify(
    database_url: str, broker_channel: str, process_group: ProcessGroup, cluster: LocalCluster
) -> None:
    await create_tables(database_url)
    env = instance_env(database_url, cluster.url, broker_channel)
    first, second = (
        process_group.start_app(name, env={**env, "BROKER_URL": f"redis+cluster://127.0.0.1:{port}"})
        for name, port in (("app1", cluster.ports[0]), ("app2", cluster.ports[1]))
    )
    async with httpx.AsyncClient(base_url=first.base_url, timeout=10) as http:
        alice, bob = [await log_in(http, name) for name in ("alice", "bob")]
        created = await http.post(
            "/rooms", json={"name": "lobby", "title": "Lobby"}, headers={"Authorization": f"Bearer {alice}"}
        )
        assert created.status_code == 201

        async with connect_ws(f"{first.ws_url}/ws/rooms/lobby", alice) as alice_ws:
            await receive_type(alice_ws, "presence.state")
            async with connect_ws(f"{second.ws_url}/ws/rooms/lobby", bob) as bob_ws:
                assert (await receive_type(bob_ws, "presence.state"))["users"] == ["alice", "bob"]
                await receive_presence(alice_ws, "bob")
                await send_json(alice_ws, {"type": "chat.message", "text": "from the first"})
                first_id = (await receive_type(bob_ws, "chat.message"))["id"]
                assert (await receive_type(alice_ws, "chat.message"))["id"] == first_id  # her own echo
                await send_json(bob_ws, {"type": "chat.message", "text": "from the second"})
                assert (await receive_type(alice_ws, "chat.message"))["text"] == "from the second"

            # A client that comes back with the last id it saw gets the rest from the history.
            async with connect_ws(f"{second.ws_url}/ws/rooms/lobby", bob, since=first_id) as bob_again:
                assert (await receive_type(bob_again, "chat.message"))["text"] == "from the second"
        history = await http.get("/rooms/lobby/messages", headers={"Authorization": f"Bearer {bob}"})
        assert [message["text"] for message in history.json()] == ["from the first", "from the second"]
{%- if cookiecutter.use_notifications == "y" %}

        root = await log_in(http, "root", register=False)
        async with (
            connect_ws(f"{first.ws_url}/ws/notifications", alice) as alice_notes,
            connect_ws(f"{second.ws_url}/ws/notifications", bob) as bob_notes,
        ):
            await send_json(bob_notes, {"type": "subscribe", "topic": "orders/+/status"})
            await receive_type(bob_notes, "subscribed")
            await send_json(alice_notes, {"type": "subscribe", "topic": "users/alice/notifications"})
            await receive_type(alice_notes, "subscribed")

            # The first instance learns of the second's wildcard filter from the registry shortly after.
            async def publish(json: dict[str, object]) -> None:
                response = await http.post(
                    "/notifications", json=json, headers={"Authorization": f"Bearer {root}"}
                )
                assert response.status_code == 202, response.text

            for attempt in range(50):
                await publish({"topic": f"orders/{attempt}/status", "data": attempt})
                try:
                    frame = await receive_type(bob_notes, "notification", within=0.2)
                except TimeoutError:
                    continue
                assert frame["topic"] == f"orders/{attempt}/status"
                break
            else:
                pytest.fail("a wildcard subscription on one instance never heard the other's notifications")

            await publish({"username": "alice", "data": "hello"})
            assert (await receive_type(alice_notes, "notification"))["data"] == "hello"
{%- endif %}


async def talk_through(
    disrupt: Callable[[], None],
    database_url: str,
    broker_channel: str,
    process_group: ProcessGroup,
    cluster: LocalCluster,
    avoid: int | None = None,
) -> tuple[float, int]:
    """Two instances, on nodes other than `avoid`; alice says 60 things in the lobby, one every 50 ms, and
    `disrupt()` runs (in a thread) after the tenth. Returns when bob first heard a message sent after it,
    counted from its start, and how many messages he missed live; fails unless the last one was heard live
    and a replay with `since` has every one."""
    await create_tables(database_url)
    nodes = [port for port in cluster.ports if port != avoid]
    env = instance_env(database_url, cluster.url, broker_channel, ws_rate_limit_per_second="100")
    first, second = (
        process_group.start_app(name, env={**env, "BROKER_URL": f"redis+cluster://127.0.0.1:{port}"})
        for name, port in (("app1", nodes[0]), ("app2", nodes[1]))
    )
    async with httpx.AsyncClient(base_url=first.base_url, timeout=10) as http:
        alice, bob = [await log_in(http, name) for name in ("alice", "bob")]
        created = await http.post(
            "/rooms", json={"name": "lobby", "title": "Lobby"}, headers={"Authorization": f"Bearer {alice}"}
        )
        assert created.status_code == 201
    heard: dict[str, float] = {}

    async def listen(websocket: ClientConnection) -> None:
        while True:
            frame = await receive_json(websocket, within=60)
            if frame.get("type") == "chat.message":
                heard.setdefault(frame["text"], time.monotonic())

    async with (
        connect_ws(f"{first.ws_url}/ws/rooms/lobby", alice) as alice_ws,
        connect_ws(f"{second.ws_url}/ws/rooms/lobby", bob) as bob_ws,
    ):
        await receive_type(alice_ws, "presence.state")
        await receive_type(bob_ws, "presence.state")
        listening = asyncio.create_task(listen(bob_ws))
        ids: dict[str, int] = {}
        disrupting: asyncio.Future[None] | None = None
        disrupted_at = 0.0
        for number in range(60):
            text = f"message {number}"
            await send_json(alice_ws, {"type": "chat.message", "text": text})
            while (echo := await receive_type(alice_ws, "chat.message", within=30))["text"] != text:
                pass
            ids[text] = echo["id"]
            if number == 10:
                disrupted_at = time.monotonic()
                disrupting = asyncio.ensure_future(asyncio.to_thread(disrupt))
            await asyncio.sleep(0.05)
        assert disrupting is not None
        await disrupting
        texts = list(ids)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(30):
                while not set(texts) <= set(heard):  # noqa: ASYNC110 - arrivals come from the listener task
                    await asyncio.sleep(0.05)
        listening.cancel()
    missed = [text for text in texts if text not in heard]
    after = [heard[text] for text in texts[11:] if text in heard]
    assert texts[-1] in heard  # live delivery resumed

    # Whatever a client missed live, it gets back from the history when it reconnects with `since`.
    async with connect_ws(f"{second.ws_url}/ws/rooms/lobby", bob, since=ids[texts[0]]) as bob_again:
        replayed = {(await receive_type(bob_again, "chat.message", within=10))["text"] for _ in texts[1:]}
    assert replayed == set(texts[1:])
    return min(after) - disrupted_at, len(missed)


@pytest.mark.heavy
async def test_a_room_keeps_talking_while_the_primary_of_its_channel_is_killed(
    database_url: str, broker_channel: str, process_group: ProcessGroup, cluster: LocalCluster
) -> None:
    victim = cluster.owner(cluster.keyslot(f"{broker_channel}:group:{room_group('lobby')}"))
    resumed, missed = await talk_through(
        lambda: cluster.kill(victim), database_url, broker_channel, process_group, cluster, avoid=victim
    )
    print(f"\nroom on a killed primary: heard again {resumed:.2f}s after SIGKILL, {missed}/60 missed live")


@pytest.mark.heavy
async def test_a_room_keeps_talking_while_its_channels_slot_moves(
    database_url: str, broker_channel: str, process_group: ProcessGroup, cluster: LocalCluster
) -> None:
    slot = cluster.keyslot(f"{broker_channel}:group:{room_group('lobby')}")
    destination = next(port for port in cluster.primaries() if port != cluster.owner(slot))
    resumed, missed = await talk_through(
        lambda: cluster.move_slot(slot, destination), database_url, broker_channel, process_group, cluster
    )
    print(f"\nroom's slot moved: heard again {resumed:.2f}s after the move began, {missed}/60 missed")
