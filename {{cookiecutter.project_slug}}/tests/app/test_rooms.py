"""Rooms: creation, who sees which room, and who may add members."""

from __future__ import annotations

import pytest
from httpx import AsyncClient

from .support import AuthHeaders


async def test_create_room_makes_the_user_its_owner(client: AsyncClient, auth_headers: AuthHeaders) -> None:
    alice = await auth_headers("alice")
    response = await client.post("/rooms", json={"name": "lobby", "title": "The lobby"}, headers=alice)
    assert response.status_code == 201
    body = response.json()
    assert {key: body[key] for key in ("name", "title", "is_private", "owner")} == {
        "name": "lobby",
        "title": "The lobby",
        "is_private": False,
        "owner": "alice",
    }
    assert body["created_at"].endswith("Z")
    assert (await client.get("/rooms/lobby", headers=alice)).json() == body


async def test_create_room_refuses_a_taken_name(client: AsyncClient, auth_headers: AuthHeaders) -> None:
    alice, bob = await auth_headers("alice"), await auth_headers("bob")
    await client.post("/rooms", json={"name": "lobby", "title": "The lobby"}, headers=alice)
    response = await client.post("/rooms", json={"name": "lobby", "title": "Mine"}, headers=bob)
    assert response.status_code == 409
    assert response.json() == {"detail": "A room named 'lobby' already exists"}


@pytest.mark.parametrize("name", ["Lobby", "-lobby", "lobby-", "the lobby", "a" * 65, ""])
async def test_room_names_are_lowercase_slugs(
    client: AsyncClient, auth_headers: AuthHeaders, name: str
) -> None:
    response = await client.post(
        "/rooms", json={"name": name, "title": "A room"}, headers=await auth_headers("alice")
    )
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "name"]


async def test_rooms_require_a_token(client: AsyncClient) -> None:
    assert (await client.get("/rooms")).status_code == 401
    assert (await client.post("/rooms", json={"name": "lobby", "title": "The lobby"})).status_code == 401


async def test_private_rooms_are_visible_to_their_members_only(
    client: AsyncClient, auth_headers: AuthHeaders
) -> None:
    alice, bob = await auth_headers("alice"), await auth_headers("bob")
    await client.post("/rooms", json={"name": "lobby", "title": "The lobby"}, headers=alice)
    await client.post("/rooms", json={"name": "secret", "title": "Secret", "is_private": True}, headers=alice)
    await client.post("/rooms", json={"name": "bobs", "title": "Bob's", "is_private": True}, headers=bob)

    async def visible(headers: dict[str, str]) -> list[str]:
        return [room["name"] for room in (await client.get("/rooms", headers=headers)).json()]

    assert await visible(alice) == ["lobby", "secret"]
    assert await visible(bob) == ["bobs", "lobby"]
    hidden = await client.get("/rooms/secret", headers=bob)
    assert hidden.status_code == 404
    assert hidden.json() == {"detail": "Room 'secret' not found"}

    added = await client.post("/rooms/secret/members", json={"username": "bob"}, headers=alice)
    assert added.status_code == 201
    assert added.json() == {"room": "secret", "user": "bob", "role": "member"}
    assert await visible(bob) == ["bobs", "lobby", "secret"]
    assert (await client.get("/rooms/secret", headers=bob)).status_code == 200


async def test_only_the_owner_adds_members_to_a_private_room(
    client: AsyncClient, auth_headers: AuthHeaders
) -> None:
    alice, bob, carol = await auth_headers("alice"), await auth_headers("bob"), await auth_headers("carol")
    await client.post("/rooms", json={"name": "secret", "title": "Secret", "is_private": True}, headers=alice)
    await client.post("/rooms/secret/members", json={"username": "bob"}, headers=alice)

    by_member = await client.post("/rooms/secret/members", json={"username": "carol"}, headers=bob)
    assert by_member.status_code == 403
    assert by_member.json() == {"detail": "Only the owner of the private room 'secret' can add members"}
    by_outsider = await client.post("/rooms/secret/members", json={"username": "carol"}, headers=carol)
    assert by_outsider.status_code == 404


async def test_anyone_may_join_a_public_room(client: AsyncClient, auth_headers: AuthHeaders) -> None:
    alice, bob = await auth_headers("alice"), await auth_headers("bob")
    await client.post("/rooms", json={"name": "lobby", "title": "The lobby"}, headers=alice)
    joined = await client.post("/rooms/lobby/members", json={"username": "bob"}, headers=bob)
    assert joined.status_code == 201
    assert joined.json() == {"room": "lobby", "user": "bob", "role": "member"}


async def test_adding_members_reports_what_is_wrong(client: AsyncClient, auth_headers: AuthHeaders) -> None:
    alice = await auth_headers("alice")
    await client.post("/rooms", json={"name": "lobby", "title": "The lobby"}, headers=alice)

    owner_again = await client.post("/rooms/lobby/members", json={"username": "alice"}, headers=alice)
    assert owner_again.status_code == 409
    assert owner_again.json() == {"detail": "'alice' is already a member of 'lobby'"}
    unknown_user = await client.post("/rooms/lobby/members", json={"username": "nobody"}, headers=alice)
    assert unknown_user.status_code == 404
    assert unknown_user.json() == {"detail": "No user is named 'nobody'"}
    unknown_room = await client.post("/rooms/nowhere/members", json={"username": "alice"}, headers=alice)
    assert unknown_room.status_code == 404
    assert unknown_room.json() == {"detail": "Room 'nowhere' not found"}
