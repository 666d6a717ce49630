"""Two app instances as deployed: uvicorn processes sharing Redis and PostgreSQL, one of them killed."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from ..processes import ProcessGroup
from .support import create_tables
from .ws_support import (
    PRESENCE_CHANGES,
    assert_not_announced,
    assert_silent,
    connect_ws,
    instance_env,
    log_in,
    presence_changes,
    receive_json,
    receive_presence,
    receive_type,
    send_json,
    start_instances,
)

pytestmark = [pytest.mark.slow, pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)]

# Short, so that the users of the killed instance are gone from presence within a couple of seconds.
PRESENCE_TTL_SECONDS = 1.0


async def test_rooms_presence_and_replay_span_instances_and_outlive_one_of_them(
    database_url: str, redis_url: str, broker_channel: str, process_group: ProcessGroup
) -> None:
    await create_tables(database_url)
    ttl = str(PRESENCE_TTL_SECONDS)
    first, second = start_instances(
        process_group, instance_env(database_url, redis_url, broker_channel, ws_presence_ttl_seconds=ttl)
    )
    async with httpx.AsyncClient(base_url=first.base_url, timeout=10) as http:
        alice, bob, carol = [await log_in(http, name) for name in ("alice", "bob", "carol")]
        created = await http.post(
            "/rooms", json={"name": "lobby", "title": "Lobby"}, headers={"Authorization": f"Bearer {alice}"}
        )
        assert created.status_code == 201
    on_first, on_second = f"{first.ws_url}/ws/rooms/lobby", f"{second.ws_url}/ws/rooms/lobby"

    async with connect_ws(on_first, alice) as alice_ws:
        await receive_type(alice_ws, "presence.state")  # she is present on the first instance from now on
        async with connect_ws(on_second, bob) as bob_ws:
            assert (await receive_type(bob_ws, "presence.state"))["users"] == ["alice", "bob"]
            await receive_presence(alice_ws, "bob")

            # What is said on one instance reaches the other, both ways, with the same id.
            await send_json(alice_ws, {"type": "chat.message", "text": "from the first"})
            first_seq = (await receive_type(bob_ws, "chat.message"))["seq"]
            assert (await receive_type(alice_ws, "chat.message"))["seq"] == first_seq
            await send_json(bob_ws, {"type": "chat.message", "text": "from the second"})
            second_message = await receive_type(alice_ws, "chat.message")
            assert second_message["text"] == "from the second"

            # A second tab on the other instance: alice is counted once, and stays when one tab closes.
            async with connect_ws(on_second, alice, place="subprotocol") as alice_other_tab:
                assert (await receive_type(alice_other_tab, "presence.state"))["users"] == ["alice", "bob"]
            await assert_not_announced(bob_ws, "alice")

            # A replay on one instance while the other is being written to: every later seq, once, in order.
            async def write() -> list[int]:
                seqs = []
                for number in range(20):
                    await send_json(alice_ws, {"type": "chat.message", "text": f"live {number}"})
                    seqs.append((await receive_type(alice_ws, "chat.message"))["seq"])
                return seqs

            writing = asyncio.create_task(write())
            async with connect_ws(on_second, carol, since=first_seq) as carol_ws:
                expected = [second_message["seq"], *await writing]
                received = []
                while len(received) < len(expected):
                    received.append((await receive_type(carol_ws, "chat.message"))["seq"])
                await assert_silent(carol_ws, "chat.message")
            assert received == expected
            await receive_presence(bob_ws, "carol", present=False)

            # The first instance dies without a word: the survivor announces that its users left, once their
            # entries expire: within the TTL of the last heartbeat, plus a heartbeat of the survivor.
            async with connect_ws(on_first, carol) as carol_on_first:
                await receive_type(carol_on_first, "presence.state")
                await receive_presence(bob_ws, "carol")
                first.kill()
                killed, within = time.monotonic(), 3 * PRESENCE_TTL_SECONDS
                gone: set[str] = set()  # in one `presence.diff`, or in two ticks
                while not {"alice", "carol"} <= gone:
                    if (frame := await receive_json(bob_ws, within))["type"] in PRESENCE_CHANGES:
                        gone.update(presence_changes(frame)[1])
                elapsed = time.monotonic() - killed
                print(f"\nthe killed instance's users left after {elapsed:.2f}s, TTL {PRESENCE_TTL_SECONDS}s")
                assert gone == {"alice", "carol"}
                assert elapsed < 2 * PRESENCE_TTL_SECONDS
                await assert_not_announced(bob_ws, "alice")
                await send_json(bob_ws, {"type": "chat.message", "text": "still here"})
                assert (await receive_type(bob_ws, "chat.message"))["text"] == "still here"
