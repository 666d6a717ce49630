"""deploy/nginx.conf in front of two real app instances: HTTP, a chat across both, and failover.

Runs where nginx is installed (Debian's `nginx-light` is enough); with `REQUIRE_SERVICES=1` a missing
nginx fails the test instead of skipping it.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import httpx
import pytest
from bench.servers import nginx_config

from ..app.support import create_tables
from ..app.ws_support import (
    connect_ws,
    create_room,
    instance_env,
    log_in,
    receive_type,
    send_json,
    start_instances,
)
from ..processes import ProcessGroup, ServerProcess

pytestmark = pytest.mark.slow

NGINX = shutil.which("nginx") or next(
    (path for path in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if Path(path).exists()), None
)


def start_nginx(group: ProcessGroup, directory: Path, instances: list[ServerProcess]) -> ServerProcess:
    """nginx, running deploy/nginx.conf with `instances` as its upstream, in the foreground."""
    if NGINX is None:
        message = "nginx is not installed (apt-get install nginx-light)"
        if os.environ.get("REQUIRE_SERVICES") == "1":
            pytest.fail(f"{message} (REQUIRE_SERVICES=1)")
        pytest.skip(message)
    upstreams = [f"127.0.0.1:{instance.port}" for instance in instances]

    def command(port: int) -> list[str]:
        prefix = directory / f"nginx-{port}"
        prefix.mkdir()
        config = prefix / "nginx.conf"
        config.write_text(nginx_config(upstreams, port, prefix, workers=1))
        return [NGINX, "-p", str(prefix), "-c", str(config), "-e", "stderr", "-g", "daemon off;"]

    return group.start("nginx", command)


async def instances_answering(http: httpx.AsyncClient, requests: int) -> list[str]:
    """The instance that answered each of `requests` health checks, every one of which must succeed."""
    answered = []
    for _ in range(requests):
        response = await http.get("/healthz")
        assert response.status_code == 200, response.text
        answered.append(response.headers["X-Instance"])
    return answered


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_nginx_spreads_http_and_websockets_over_the_instances_and_fails_over(
    database_url: str, redis_url: str, broker_channel: str, process_group: ProcessGroup, tmp_path: Path
) -> None:
    await create_tables(database_url)
    instances = start_instances(process_group, instance_env(database_url, redis_url, broker_channel))
    nginx = start_nginx(process_group, tmp_path, instances)
    room = f"{nginx.ws_url}/ws/rooms/lobby"
    async with httpx.AsyncClient(base_url=nginx.base_url, timeout=10) as http:
        assert set(await instances_answering(http, 4)) == {"app1", "app2"}
        alice, bob = await log_in(http, "alice"), await log_in(http, "bob")
        await create_room(http, alice, "lobby")

        # Round-robin: of three connections, two land on different instances.
        async with (
            connect_ws(room, alice) as first,
            connect_ws(room, bob) as second,
            connect_ws(room, bob) as third,
        ):
            landed = {}
            for websocket in (first, second, third):
                assert websocket.response is not None
                landed.setdefault(websocket.response.headers["X-Instance"], websocket)
                await receive_type(websocket, "presence.state")  # in the room: what is sent now reaches it
            assert set(landed) == {"app1", "app2"}
            sender, receiver = landed["app1"], landed["app2"]
            await send_json(sender, {"type": "chat.message", "text": "across instances, through nginx"})
            received = await receive_type(receiver, "chat.message")
            assert received["text"] == "across instances, through nginx"

        [app1] = [instance for instance in instances if instance.name == "app1"]
        app1.kill()
        # Every request still succeeds: one sent to the dead instance is refused and goes to the other.
        assert set(await instances_answering(http, 4)) == {"app2"}
        async with connect_ws(room, alice) as after, connect_ws(room, bob) as other:
            for websocket in (after, other):
                assert websocket.response is not None
                assert websocket.response.headers["X-Instance"] == "app2"
                await receive_type(websocket, "presence.state")
            await send_json(after, {"type": "chat.message", "text": "after the failover"})
            assert (await receive_type(other, "chat.message"))["text"] == "after the failover"
