"""The deployed topology end to end: PostgreSQL, Redis, Alembic's migrations, two app instances and the
gateway, each a real process on a loopback port, used only through the gateway, as clients would.

alice and bob chat in `lobby` from different instances; carol sits on alice's. Then alice's instance is
killed (SIGKILL): alice and carol are closed, alice comes back through the gateway to the survivor with
`since=<the last id she saw>` and gets every message bob said meanwhile, once each and in id order; carol
stays away, and presence forgets her once her entry's TTL has run out. The gateway answers HTTP all along.
"""

from __future__ import annotations

import asyncio
import time
from contextlib import AsyncExitStack

import httpx
import pytest

from ..app.ws_support import create_room, log_in
from ..processes import wait_until
from ..realtime.support import eventually
from .clients import describe, keep_saying, probing
from .stack import (
    GATEWAY_HEALTH_INTERVAL_SECONDS,
    PRESENCE_TTL_SECONDS,
    ROOM,
    SLACK_SECONDS,
    WAIT_SECONDS,
    Lobby,
    Topology,
    say_in_turn,
    seconds_after,
    seconds_left,
    stored_ids,
)

pytestmark = [pytest.mark.slow, pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)]

# A dead instance's entries expire within the TTL, and the survivors reread presence every TTL / 2.
PRESENCE_BOUND_SECONDS = 1.5 * PRESENCE_TTL_SECONDS + SLACK_SECONDS
PROBE_INTERVAL_SECONDS = 0.05
TALK_INTERVAL_SECONDS = 0.15  # under the default rate limit of 10 frames a second
MESSAGES_EACH = 5
SAID_WHILE_AWAY = 3
SAID_AFTER_RETURN = 3
PAIR = {"alice", "bob"}


async def test_a_room_outlives_an_instance_killed_behind_the_gateway(topology: Topology) -> None:
    gateway = topology.gateway
    figures = {"stack up": f"{topology.ready_in:.1f} s (the migrations took {topology.migrated_in:.1f} s)"}
    async with (
        asyncio.timeout(seconds_left(topology.started_at)),
        httpx.AsyncClient(base_url=gateway.base_url, timeout=WAIT_SECONDS) as http,
        AsyncExitStack() as connections,
    ):
        tokens = {user: await log_in(http, user) for user in ("alice", "bob", "carol")}
        await create_room(http, tokens["alice"], ROOM)
        lobby = Lobby(f"{gateway.ws_url}/ws/rooms/{ROOM}", tokens, connections)

        alice = await lobby.join("alice", "header")
        bob = await lobby.join("bob", "subprotocol", landing=lambda instance: instance != alice.instance)
        carol = await lobby.join("carol", "query", landing=lambda instance: instance == alice.instance)
        victim, survivor = topology.apps[str(alice.instance)], topology.apps[str(bob.instance)]
        everyone = (alice, bob, carol)
        await eventually(lambda: all(client.present == {*PAIR, "carol"} for client in everyone), WAIT_SECONDS)

        # Both ways at once: everyone hears everything, each sender's messages in the order said.
        said = {user: [f"{user} {number}" for number in range(MESSAGES_EACH)] for user in PAIR}
        await asyncio.gather(say_in_turn(alice, said["alice"]), say_in_turn(bob, said["bob"]))
        await eventually(
            lambda: all(len(client.ids) >= 2 * MESSAGES_EACH for client in everyone), WAIT_SECONDS
        )
        for client in everyone:
            assert {user: client.texts_from(user) for user in PAIR} == said
        assert sorted(alice.ids) == sorted(bob.ids) == sorted(carol.ids)
        figures["before the kill"] = f"alice and bob said {MESSAGES_EACH} each at once; " + ", ".join(
            f"{client.user} received {len(client.ids)}" for client in everyone
        )

        stop_talking = asyncio.Event()
        bob_said: list[str] = []
        async with (
            probing(gateway.base_url, "/healthz", PROBE_INTERVAL_SECONDS) as probes,
            asyncio.TaskGroup() as tasks,
        ):
            tasks.create_task(keep_saying(bob, "bob, later", bob_said, stop_talking, TALK_INTERVAL_SECONDS))
            await eventually(lambda: "bob, later 0" in alice.texts_from("bob"), WAIT_SECONDS)

            killed_at = time.monotonic()
            await asyncio.to_thread(victim.kill)

            async def one_upstream_healthy() -> bool:
                return bool((await http.get("/gateway/readyz")).json()["healthy_upstreams"] == 1)

            marked_down = tasks.create_task(
                seconds_after(killed_at, wait_until(one_upstream_healthy, WAIT_SECONDS))
            )
            bob_sees_pair = tasks.create_task(
                seconds_after(killed_at, eventually(lambda: bob.present == PAIR, PRESENCE_BOUND_SECONDS))
            )
            for client in (alice, carol):
                closed_after = await client.ended(WAIT_SECONDS) - killed_at
                figures[f"kill -> {client.user} closed"] = (
                    f"{closed_after:.3f} s ({client.websocket.close_code})"
                )
            last_seen = max(alice.ids)

            # alice stays away until bob has said a few more, which only `since` can bring her.
            said_while_away = f"bob, later {len(bob_said) + SAID_WHILE_AWAY - 1}"
            await eventually(lambda: said_while_away in bob.texts_from("bob"), WAIT_SECONDS)
            returning_at = time.monotonic()
            alice_again = await lobby.join("alice", "header", since=last_seen)
            returned_at, latest_before_return = time.monotonic(), max(bob.ids)
            figures["alice back"] = (
                f"on {alice_again.instance} {returned_at - killed_at:.2f} s after the kill; "
                f"connecting and catching up took {returned_at - returning_at:.3f} s"
            )
            alice_sees_pair = tasks.create_task(
                seconds_after(
                    killed_at, eventually(lambda: alice_again.present == PAIR, PRESENCE_BOUND_SECONDS)
                )
            )
            said_after_return = f"bob, later {len(bob_said) + SAID_AFTER_RETURN - 1}"
            await eventually(lambda: said_after_return in alice_again.texts_from("bob"), WAIT_SECONDS)
            stop_talking.set()
            await eventually(lambda: bob.texts_from("bob")[-1] == bob_said[-1], WAIT_SECONDS)
            await eventually(lambda: alice_again.texts_from("bob")[-1] == bob_said[-1], WAIT_SECONDS)
            presence_converged = max(await bob_sees_pair, await alice_sees_pair)
        history = await stored_ids(http, tokens["alice"])
        # Before the connections close: each close is a leave the others would hear.
        present_at_the_end = (set(bob.present), set(alice_again.present))

    down_at = killed_at + marked_down.result()
    after_down = [probe for probe in probes if probe.started_at > down_at]
    first_got, second_got = len(alice.texts_from("bob")) - MESSAGES_EACH, len(alice_again.ids)
    while_away = sum(message_id <= latest_before_return for message_id in alice_again.ids)
    figures |= {
        "bob kept talking": (
            f"{len(bob_said)} more; alice's first connection got {first_got}, her second {second_got} "
            f"({while_away} said while she was away), {second_got - len(set(alice_again.ids))} twice"
        ),
        "gateway marked the dead instance down": f"{marked_down.result():.3f} s after the kill",
        "presence converged": f"{presence_converged:.2f} s after the kill (TTL {PRESENCE_TTL_SECONDS} s)",
        "GET /healthz through the gateway": (
            f"{len(probes)} requests: {describe(probes)}; after the mark-down: {describe(after_down)}"
        ),
        "whole test": f"{time.monotonic() - topology.started_at:.1f} s",
    }
    print("\n" + "\n".join(f"{name}: {value}" for name, value in figures.items()))

    # The gateway closed alice and carol with the code that says their upstream went away.
    for client in (alice, carol):
        closed = (client.websocket.close_code, client.websocket.close_reason)
        assert closed == (1014, "upstream connection lost")
    assert alice_again.instance == survivor.name
    # Across alice's two connections, everything bob said, in order, once; after `since`, all in id order.
    assert alice.texts_from("bob") + alice_again.texts_from("bob") == said["bob"] + bob_said
    assert alice_again.ids == [message_id for message_id in history if message_id > last_seen]
    assert sorted(alice.ids + alice_again.ids) == history
    assert bob.texts_from("bob") == said["bob"] + bob_said
    assert sorted(bob.ids) == history
    assert presence_converged <= PRESENCE_BOUND_SECONDS
    assert present_at_the_end == (PAIR, PAIR)
    # The gateway answered every request; once it had marked the dead instance down, only with 200s.
    assert all(probe.status is not None for probe in probes)
    assert marked_down.result() <= GATEWAY_HEALTH_INTERVAL_SECONDS + SLACK_SECONDS
    assert after_down
    assert {(probe.status, probe.instance) for probe in after_down} == {(200, survivor.name)}
