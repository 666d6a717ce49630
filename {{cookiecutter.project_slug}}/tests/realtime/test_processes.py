"""Two uvicorn processes sharing Redis: what a client sends on one reaches a client of the other."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import connect

from .support import bound_socket, receive_json, send_json

PROJECT = Path(__file__).resolve().parents[2]


@contextmanager
def instance(name: str, redis_url: str, broker_channel: str) -> Iterator[str]:
    """Run the test service in its own process on a free port; yields its `127.0.0.1:<port>`."""
    probe = bound_socket()
    port = probe.getsockname()[1]
    probe.close()
    environment = {
        **os.environ,
        "PYTHONPATH": str(PROJECT / "src"),
        "BROKER_URL": redis_url,
        "BROKER_CHANNEL": broker_channel,
        "INSTANCE_NAME": name,
    }
    command = [sys.executable, "-m", "uvicorn", "--factory", "tests.realtime.app:create_app"]
    command += ["--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
    process = subprocess.Popen(command, cwd=PROJECT, env=environment)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


async def wait_ready(address: str) -> None:
    async with httpx.AsyncClient() as http, asyncio.timeout(30):
        while True:
            try:
                if (await http.get(f"http://{address}/readyz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.1)


@pytest.mark.slow
async def test_a_message_sent_on_one_process_reaches_the_other(redis_url: str, broker_channel: str) -> None:
    with (
        instance("one", redis_url, broker_channel) as first,
        instance("two", redis_url, broker_channel) as second,
    ):
        await asyncio.gather(wait_ready(first), wait_ready(second))
        async with connect(f"ws://{first}/ws") as alice, connect(f"ws://{second}/ws") as bob:
            # The room is joined once the handshake is answered, a moment later: an answer to a frame says so.
            for client in (alice, bob):
                await send_json(client, {"type": "ping"})
                assert (await receive_json(client))["code"] == "unknown_type"
            await send_json(alice, {"type": "say", "text": "hello from one"})
            expected = {"type": "said", "text": "hello from one", "instance": "one"}
            assert await receive_json(bob) == await receive_json(alice) == expected

            await send_json(bob, {"type": "say", "text": "hello from two"})
            assert (await receive_json(alice))["instance"] == "two"
