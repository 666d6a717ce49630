"""Helpers of the gateway tests: `upstream_app` processes, and the gateway served in the test's event loop.

`upstream_app` and its clients (`hello`, `close_received`) live in `tests/realtime`, which is baked without
the gateway too.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from {{ cookiecutter.package_name }}.gateway import create_gateway
from {{ cookiecutter.package_name }}.gateway.websocket_relay import RelayProtocol
from {{ cookiecutter.package_name }}.settings import Settings

from ..processes import PROJECT_DIR, ProcessGroup, ServerProcess, serve_in_loop

TIMEOUT = 10.0


def start_upstream(group: ProcessGroup, name: str, port: int | None = None) -> ServerProcess:
    """An `upstream_app` process that reports `name` as its instance."""
    app = "tests.realtime.upstream_app:create_upstream_app"
    return group.start_uvicorn(
        name, app, factory=True, app_dir=PROJECT_DIR, port=port, env={"INSTANCE_NAME": name}
    )


def gateway_settings(upstream_urls: list[str], **overrides: Any) -> Settings:
    """Settings for a gateway over `upstream_urls` that notices a change of health within a second.

    The timeouts stay generous: on a loaded machine a live upstream can take a second to answer, and
    a timeout would wrongly take it out of rotation. Dead upstreams are noticed by refused connections.
    """
    values: dict[str, Any] = {
        "gateway_upstreams": ",".join(upstream_urls),
        "gateway_health_interval_seconds": 0.2,
        "gateway_health_timeout_seconds": 3.0,
        "gateway_connect_timeout_seconds": 5.0,
        "gateway_upstream_timeout_seconds": 5.0,
        **overrides,
    }
    return Settings(_env_file=None, **values)


@asynccontextmanager
async def running_gateway(
    upstream_urls: list[str],
    proxy_headers: bool = True,
    ws: Any = RelayProtocol,
    ws_ping_interval: float = 20.0,
    **overrides: Any,
) -> AsyncIterator[str]:
    """A gateway over `upstream_urls`, served in the running event loop; yields its base URL.

    `proxy_headers=False` makes the gateway trust no `X-Forwarded-*` from its clients, as on a public edge.
    `ws` is uvicorn's WebSocket protocol: the gateway's own, as the `gateway` command serves it, by default.
    `ws_ping_interval` is uvicorn's, and its ping timeout too.
    """
    gateway = create_gateway(gateway_settings(upstream_urls, **overrides))
    pings = {"ws_ping_interval": ws_ping_interval, "ws_ping_timeout": ws_ping_interval}
    async with serve_in_loop(gateway, proxy_headers=proxy_headers, ws=ws, **pings) as base_url:
        yield base_url
