"""Reading a Prometheus exposition, and the helpers of the app tests that these tests share."""

from __future__ import annotations

from httpx import AsyncClient
from prometheus_client.parser import text_string_to_metric_families

from ..app.support import PASSWORD, create_tables
from ..app.ws_support import (
    close_code,
    connect_ws,
    create_room,
    instance_env,
    log_in,
    receive_type,
    send_json,
)

__all__ = [
    "PASSWORD",
    "close_code",
    "connect_ws",
    "create_room",
    "create_tables",
    "instance_env",
    "label_values",
    "log_in",
    "receive_type",
    "sample",
    "scrape",
    "send_json",
]


async def scrape(http: AsyncClient, path: str = "/metrics") -> str:
    response = await http.get(path)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=")
    return response.text


def sample(exposition: str, name: str, **labels: str) -> float:
    """The value of the sample `name` with exactly `labels`; 0 if there is none (not incremented yet)."""
    for family in text_string_to_metric_families(exposition):
        for candidate in family.samples:
            if candidate.name == name and candidate.labels == labels:
                return float(candidate.value)
    return 0.0


def label_values(exposition: str) -> set[str]:
    """Every label value of every sample."""
    return {
        value
        for family in text_string_to_metric_families(exposition)
        for candidate in family.samples
        for value in candidate.labels.values()
    }
