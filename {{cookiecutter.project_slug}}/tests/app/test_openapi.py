"""The OpenAPI document describes every route of the HTTP API with its errors and examples."""

from __future__ import annotations

from typing import Any

import pytest
from httpx import AsyncClient

EXPECTED_RESPONSES = {
    ("post", "/auth/register"): {"201", "409", "422", "429"},
    ("post", "/auth/token"): {"200", "401", "403", "422", "429"},
    ("post", "/auth/logout"): {"204", "401"},
    ("post", "/auth/password"): {"204", "401", "422", "429"},
    ("get", "/users/me"): {"200", "401"},
    ("get", "/rooms"): {"200", "401"},
    ("post", "/rooms"): {"201", "401", "409", "422"},
    ("get", "/rooms/{room}"): {"200", "401", "404", "422"},
    ("post", "/rooms/{room}/members"): {"201", "401", "403", "404", "409", "422"},
    ("get", "/rooms/{room}/messages"): {"200", "401", "404", "422"},
}


@pytest.fixture
async def openapi(client: AsyncClient) -> dict[str, Any]:
    response = await client.get("/openapi.json")
    assert response.status_code == 200
    document: dict[str, Any] = response.json()
    return document


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_every_route_documents_its_error_responses(openapi: dict[str, Any]) -> None:
    documented = {
        (method, path): set(operation["responses"])
        for (method, path) in EXPECTED_RESPONSES
        for operation in [openapi["paths"][path][method]]
    }
    assert documented == EXPECTED_RESPONSES


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_schemas_carry_examples(openapi: dict[str, Any]) -> None:
    schemas = openapi["components"]["schemas"]
    for name in (
        "UserCreate",
        "PasswordChange",
        "UserPublic",
        "RoomCreate",
        "RoomPublic",
        "MembershipCreate",
        "MessagePublic",
    ):
        properties = schemas[name]["properties"]
        assert all("examples" in field for field in properties.values()), name
