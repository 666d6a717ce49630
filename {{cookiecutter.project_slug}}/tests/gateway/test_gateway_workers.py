"""`gateway --workers N`: several processes on one port, splitting the health polls, relaying bytes."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from websockets.asyncio.client import connect

from {{ cookiecutter.package_name }}.gateway.app import Gateway

from ..processes import ProcessGroup, ServerProcess
from ..realtime.support import hello
from .gateway_support import gateway_settings


def workers(pid: int) -> list[int]:
    """The worker processes uvicorn started (multiprocessing's spawn; not its resource tracker)."""
    children = [
        child
        for task in Path(f"/proc/{pid}/task").iterdir()
        for child in (task / "children").read_text().split()
    ]
    return [int(child) for child in children if b"spawn_main" in Path(f"/proc/{child}/cmdline").read_bytes()]


def test_workers_poll_each_upstream_once_per_interval_between_them() -> None:
    single = Gateway(gateway_settings(["http://127.0.0.1:9"], gateway_health_interval_seconds=2.0))
    three = Gateway(
        gateway_settings(["http://127.0.0.1:9"], gateway_health_interval_seconds=2.0, gateway_workers=3)
    )
    assert single.health_interval == 2.0
    assert three.health_interval == 6.0


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="counts worker processes in /proc")
async def test_two_workers_share_the_port_and_leave_compression_to_client_and_upstream(
    upstream_pair: tuple[ServerProcess, ServerProcess], process_group: ProcessGroup
) -> None:
    env = {
        "GATEWAY_UPSTREAMS": ",".join(upstream.base_url for upstream in upstream_pair),
        "GATEWAY_HEALTH_INTERVAL_SECONDS": "0.2",
    }

    def command(port: int) -> list[str]:
        cli = [sys.executable, "-m", "{{ cookiecutter.package_name }}", "gateway", "--host", "127.0.0.1"]
        return [*cli, "--port", str(port), "--workers", "2"]

    gateway = process_group.start("gateway", command, env=env, health_path="/gateway/readyz")
    assert len(workers(gateway.process.pid)) == 2
    url = gateway.ws_url + "/ws/echo"
    # The client offers permessage-deflate (the websockets default) and the upstream, a plain uvicorn, takes
    # it: the offer and the answer cross the gateway, which relays the compressed frames as they are.
    async with connect(url) as first, connect(url) as second:
        greetings = [await hello(websocket) for websocket in (first, second)]
        for websocket in (first, second):
            assert websocket.response is not None
            assert "permessage-deflate" in websocket.response.headers["Sec-WebSocket-Extensions"]
            await websocket.send("echo me " * 100)
            assert await websocket.recv() == "echo me " * 100
    assert {greeting["instance"] for greeting in greetings} <= {"alpha", "beta"}
    for greeting in greetings:
        assert "permessage-deflate" in dict(greeting["headers"])["sec-websocket-extensions"]
