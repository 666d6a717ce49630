"""Liveness and readiness probes, used by the compose healthchecks and the gateway."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response, status

from ..db.session import ping
from ..realtime import BrokerState, WebSocketManager

router = APIRouter(tags=["health"])


def broker_check(manager: WebSocketManager) -> str:
    """`ok` when the broker is connected and the manager's listener runs, else what is wrong."""
    if manager.broker.state is not BrokerState.CONNECTED:
        return f"error: broker {manager.broker.state}"
    if not manager.listening:
        return "error: the broker listener is not running"
    return "ok"


@router.get("/healthz", summary="The process is alive")
async def healthz(request: Request) -> dict[str, str]:
    return {"status": "ok", "instance": request.app.state.settings.instance_name}


@router.get(
    "/readyz",
    summary="The database is reachable, and the broker connected and listened to",
    responses={503: {"description": "A dependency is down; `checks` says which"}},
)
async def readyz(request: Request, response: Response) -> dict[str, Any]:
    checks: dict[str, str] = {}
    try:
        await ping(request.app.state.engine)
        checks["database"] = "ok"
    except Exception as error:  # noqa: BLE001 - any failure means not ready; the body says which
        checks["database"] = f"error: {type(error).__name__}"
    checks["broker"] = broker_check(request.app.state.manager)
    ready = all(value == "ok" for value in checks.values())
    if not ready:
        response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    return {"status": "ok" if ready else "unavailable", "checks": checks}
