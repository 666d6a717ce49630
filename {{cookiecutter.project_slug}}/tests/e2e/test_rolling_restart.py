"""An app instance stopped gracefully behind the gateway (SIGTERM), as in a rolling deployment.

alice and bob chat in `lobby` from different instances, bob without a pause. alice's instance gets SIGTERM:
it closes her WebSocket with 1012 (service restart), which the gateway relays, and exits, its shutdown
complete, within its grace period. Once bob has said a few more, alice reconnects through the gateway, which
sends her to the instance still running, with `since=<the last id she saw>`: across her two connections she
gets everything bob said, once each and in order. The gateway answers HTTP all along.
"""

from __future__ import annotations

import asyncio
import signal
import time
from contextlib import AsyncExitStack

import httpx
import pytest

from ..app.ws_support import create_room, log_in
from ..realtime.support import eventually
from .clients import describe, keep_saying, probing
from .stack import ROOM, SLACK_SECONDS, WAIT_SECONDS, Lobby, Topology, seconds_left, stored_ids

pytestmark = [pytest.mark.slow, pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)]

GRACE_SECONDS = 8.0  # the default of SHUTDOWN_GRACE_SECONDS
PROBE_INTERVAL_SECONDS = 0.05
TALK_INTERVAL_SECONDS = 0.15  # under the default rate limit of 10 frames a second
SAID_BEFORE_STOP = 3
SAID_WHILE_AWAY = 3
SAID_AFTER_RETURN = 3
PAIR = {"alice", "bob"}


async def test_clients_of_an_instance_stopped_with_sigterm_resume_on_the_other_without_gap_or_duplicate(
    topology: Topology,
) -> None:
    gateway = topology.gateway
    figures = {"stack up": f"{topology.ready_in:.1f} s"}
    async with (
        asyncio.timeout(seconds_left(topology.started_at)),
        httpx.AsyncClient(base_url=gateway.base_url, timeout=WAIT_SECONDS) as http,
        AsyncExitStack() as connections,
    ):
        tokens = {user: await log_in(http, user) for user in PAIR}
        await create_room(http, tokens["alice"], ROOM)
        lobby = Lobby(f"{gateway.ws_url}/ws/rooms/{ROOM}", tokens, connections)
        alice = await lobby.join("alice", "header")
        bob = await lobby.join("bob", "subprotocol", landing=lambda instance: instance != alice.instance)
        stopped, survivor = topology.apps[str(alice.instance)], topology.apps[str(bob.instance)]
        await eventually(lambda: alice.present == bob.present == PAIR, WAIT_SECONDS)

        stop_talking = asyncio.Event()
        bob_said: list[str] = []
        async with probing(gateway.base_url, "/healthz", PROBE_INTERVAL_SECONDS) as probes:
            talking = asyncio.create_task(
                keep_saying(bob, "bob", bob_said, stop_talking, TALK_INTERVAL_SECONDS)
            )
            await eventually(lambda: len(alice.texts_from("bob")) >= SAID_BEFORE_STOP, WAIT_SECONDS)

            def wait_for_exit() -> tuple[int, float]:
                status = stopped.process.wait(GRACE_SECONDS + SLACK_SECONDS)
                return status, time.monotonic()

            signalled_at = time.monotonic()
            stopped.process.send_signal(signal.SIGTERM)
            exiting = asyncio.create_task(asyncio.to_thread(wait_for_exit))
            closed_at = await alice.ended(WAIT_SECONDS)
            last_seen = max(alice.ids)

            # She stays away until bob has said a few more, which only `since` can bring her.
            said_while_away = f"bob {len(bob_said) + SAID_WHILE_AWAY - 1}"
            await eventually(lambda: said_while_away in bob.texts_from("bob"), WAIT_SECONDS)
            alice_again = await lobby.join("alice", "header", since=last_seen)
            returned_at, latest_before_return = time.monotonic(), max(bob.ids)
            said_after_return = f"bob {len(bob_said) + SAID_AFTER_RETURN - 1}"
            await eventually(lambda: said_after_return in alice_again.texts_from("bob"), WAIT_SECONDS)
            stop_talking.set()
            await talking
            await eventually(lambda: alice_again.texts_from("bob")[-1] == bob_said[-1], WAIT_SECONDS)
            await eventually(lambda: bob.texts_from("bob")[-1] == bob_said[-1], WAIT_SECONDS)
            await eventually(lambda: alice_again.present == bob.present == PAIR, WAIT_SECONDS)
            status, exited_at = await exiting
        history = await stored_ids(http, tokens["alice"])

    first_got, second_got = len(alice.ids), len(alice_again.ids)
    while_away = sum(message_id <= latest_before_return for message_id in alice_again.ids)
    figures |= {
        "SIGTERM -> alice closed": f"{closed_at - signalled_at:.3f} s ({alice.websocket.close_code})",
        "SIGTERM -> process exited": f"{exited_at - signalled_at:.2f} s (status {status})",
        "alice back": (
            f"on {alice_again.instance} {returned_at - signalled_at:.2f} s after the signal, "
            f"{returned_at - closed_at:.3f} s after her close"
        ),
        "bob said": (
            f"{len(bob_said)}; alice's first connection got {first_got}, her second {second_got} "
            f"({while_away} said while she was away, {second_got - len(set(alice_again.ids))} twice), "
            f"{len(history)} stored"
        ),
        "GET /healthz through the gateway": f"{len(probes)} requests: {describe(probes)}",
    }
    print("\n" + "\n".join(f"{name}: {value}" for name, value in figures.items()))

    assert alice.websocket.close_code == 1012
    assert status == -signal.SIGTERM
    assert exited_at - signalled_at <= GRACE_SECONDS
    assert "Application shutdown complete" in stopped.output()
    assert alice_again.instance == survivor.name
    assert while_away >= SAID_WHILE_AWAY
    # Across alice's two connections, everything bob said, in order, once; after `since`, all in id order.
    assert alice.texts_from("bob") + alice_again.texts_from("bob") == bob_said
    assert alice_again.ids == [message_id for message_id in history if message_id > last_seen]
    assert sorted(alice.ids + alice_again.ids) == history
    assert bob.texts_from("bob") == bob_said
    assert sorted(bob.ids) == history
    assert all(probe.status is not None for probe in probes)
