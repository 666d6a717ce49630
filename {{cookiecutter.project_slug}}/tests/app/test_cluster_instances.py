"""Two app instances on a Redis Cluster, each given a different node: chat, presence, history{% if cookiecutter.use_notifications == "y" %} and
notifications, wildcard filters included{% endif %}."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from processes import ProcessGroup
from realtime.cluster import LocalCluster

from .support import create_tables
from .ws_support import connect_ws, instance_env, log_in, receive_type, send_json

pytestmark = [pytest.mark.slow, pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)]


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    with LocalCluster(tmp_path / "cluster") as started:
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
                assert (await receive_type(alice_ws, "presence.join"))["user"] == "bob"
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
