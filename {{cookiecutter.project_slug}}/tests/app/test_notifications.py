"""Notifications: topic subscriptions, a user's own notifications, `POST /notifications`, instances."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from httpx import ASGITransport, AsyncClient
from pydantic import SecretStr
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from websockets.asyncio.client import ClientConnection

from {{ cookiecutter.package_name }}.consumers.notifications import reaches_other_users
from {{ cookiecutter.package_name }}.db.models import User
from {{ cookiecutter.package_name }}.main import create_app
from {{ cookiecutter.package_name }}.settings import Settings

from ..processes import ProcessGroup
from .support import PASSWORD, AuthHeaders, create_tables
from .ws_support import (
    BROKERS,
    assert_silent,
    close_code,
    connect_ws,
    instance_env,
    log_in,
    receive_json,
    receive_type,
    send_json,
    start_instances,
    token_for,
)

SQLITE_ONLY = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)

OTHER_USERS_FILTERS = [
    "#",
    "users/#",
    "users/+",
    "users/+/notifications",
    "users/bob/#",
    "+/+",
    "+/#",
    "+/bob/x",
]
OWN_FILTERS = ["users/alice/#", "users/alice", "users", "+", "+/alice/#", "orders/+/status", "$SYS/#"]


async def superuser_headers(
    auth_headers: AuthHeaders, session_factory: async_sessionmaker[AsyncSession], username: str = "root"
) -> dict[str, str]:
    headers = await auth_headers(username)
    async with session_factory() as session:
        await session.execute(update(User).where(User.username == username).values(is_superuser=True))
        await session.commit()
    return headers


async def own_topic_subscribed(websocket: ClientConnection, username: str) -> None:
    """Return once the server has subscribed the connection to its user's topic.

    The consumer does so in `connect()`, before it reads a frame: the answer to one proves it done.
    """
    topic = f"users/{username}/notifications"
    await send_json(websocket, {"type": "subscribe", "topic": topic})
    assert await receive_type(websocket, "subscribed") == {"type": "subscribed", "topic": topic}


@pytest.mark.parametrize("topic_filter", OTHER_USERS_FILTERS)
def test_filters_that_could_match_another_users_topics_are_recognised(topic_filter: str) -> None:
    assert reaches_other_users(topic_filter, "alice")


@pytest.mark.parametrize("topic_filter", OWN_FILTERS)
def test_filters_of_ones_own_or_shared_topics_are_recognised(topic_filter: str) -> None:
    assert not reaches_other_users(topic_filter, "alice")


@SQLITE_ONLY
@pytest.mark.parametrize("broker_url", BROKERS, indirect=True)
async def test_a_subscriber_receives_what_is_published_to_matching_topics(
    client: AsyncClient,
    auth_headers: AuthHeaders,
    session_factory: async_sessionmaker[AsyncSession],
    ws_url: str,
) -> None:
    root = await superuser_headers(auth_headers, session_factory)
    alice = await token_for(auth_headers, "alice")
    async with connect_ws(f"{ws_url}/ws/notifications", alice) as websocket:
        await send_json(websocket, {"type": "subscribe", "topic": "orders/+/status"})
        assert await receive_json(websocket) == {"type": "subscribed", "topic": "orders/+/status"}
        for topic in ("orders/7/status", "orders/7/items", "orders/8/status"):
            published = await client.post(
                "/notifications", json={"topic": topic, "data": topic}, headers=root
            )
            assert published.status_code == 202, published.text
            assert published.json() == {"topic": topic, "data": topic}
        assert [(await receive_json(websocket))["data"] for _ in range(2)] == [
            "orders/7/status",
            "orders/8/status",
        ]

        await send_json(websocket, {"type": "unsubscribe", "topic": "orders/+/status"})
        assert await receive_json(websocket) == {"type": "unsubscribed", "topic": "orders/+/status"}
        await client.post("/notifications", json={"topic": "orders/9/status", "data": 1}, headers=root)
        await assert_silent(websocket, "notification")


@SQLITE_ONLY
@pytest.mark.parametrize("broker_url", BROKERS, indirect=True)
async def test_a_users_notification_reaches_every_connection_of_theirs_and_no_one_else(
    client: AsyncClient,
    auth_headers: AuthHeaders,
    session_factory: async_sessionmaker[AsyncSession],
    ws_url: str,
) -> None:
    root = await superuser_headers(auth_headers, session_factory)
    alice, bob = await token_for(auth_headers, "alice"), await token_for(auth_headers, "bob")
    url = f"{ws_url}/ws/notifications"
    async with (
        connect_ws(url, alice) as first_tab,
        connect_ws(url, alice, place="subprotocol") as second_tab,
        connect_ws(url, bob) as bob_ws,
    ):
        await own_topic_subscribed(first_tab, "alice")
        await own_topic_subscribed(bob_ws, "bob")
        await send_json(second_tab, {"type": "subscribe", "topic": "users/alice/#"})
        await receive_type(second_tab, "subscribed")
        data = {"title": "Hello", "text": "Welcome"}
        published = await client.post(
            "/notifications", json={"username": "alice", "data": data}, headers=root
        )
        assert published.status_code == 202, published.text
        expected = {"type": "notification", "topic": "users/alice/notifications", "data": data}
        assert await receive_json(first_tab) == await receive_json(second_tab) == expected
        await assert_silent(second_tab, "notification")
        await assert_silent(bob_ws, "notification")


@SQLITE_ONLY
async def test_another_users_topics_are_forbidden_and_bad_filters_invalid(
    auth_headers: AuthHeaders, ws_url: str
) -> None:
    alice = await token_for(auth_headers, "alice")
    async with connect_ws(f"{ws_url}/ws/notifications", alice) as websocket:
        for topic_filter in OTHER_USERS_FILTERS:
            await send_json(websocket, {"type": "subscribe", "topic": topic_filter})
            error = await receive_json(websocket)
            assert (error["type"], error["code"]) == ("error", "forbidden"), topic_filter
        for frame, code in [
            ({"type": "subscribe", "topic": "orders/#/status"}, "invalid_topic"),
            ({"type": "subscribe", "topic": "orders/7+"}, "invalid_topic"),
            ({"type": "subscribe", "topic": ""}, "invalid_topic"),
            ({"type": "subscribe"}, "invalid_message"),
            ({"type": "broadcast", "data": 1}, "unknown_type"),
            ({"type": "send_by_conn_id", "conn_id": "x", "data": 1}, "unknown_type"),
        ]:
            await send_json(websocket, frame)
            error = await receive_json(websocket)
            assert (error["type"], error["code"]) == ("error", code), frame
        await send_json(websocket, {"type": "subscribe", "topic": "users/alice/#"})
        assert await receive_json(websocket) == {"type": "subscribed", "topic": "users/alice/#"}


@SQLITE_ONLY
async def test_clients_publish_only_where_the_settings_allow_it(
    auth_headers: AuthHeaders, settings: Settings, ws_url: str
) -> None:
    alice, bob = await token_for(auth_headers, "alice"), await token_for(auth_headers, "bob")
    url = f"{ws_url}/ws/notifications"
    async with connect_ws(url, alice) as alice_ws, connect_ws(url, bob) as bob_ws:
        await send_json(bob_ws, {"type": "subscribe", "topic": "orders/#"})
        await receive_type(bob_ws, "subscribed")
        await send_json(alice_ws, {"type": "send", "topic": "orders/7", "data": "paid"})
        assert (await receive_json(alice_ws))["code"] == "forbidden"
        await assert_silent(bob_ws, "notification")

        settings.notifications_client_publish = True
        await send_json(alice_ws, {"type": "send", "topic": "orders/7", "data": "paid"})
        assert await receive_json(bob_ws) == {"type": "notification", "topic": "orders/7", "data": "paid"}
        for topic, code in [("users/bob/notifications", "forbidden"), ("orders/+", "invalid_topic")]:
            await send_json(alice_ws, {"type": "send", "topic": topic, "data": "spoofed"})
            assert (await receive_json(alice_ws))["code"] == code, topic
        await assert_silent(bob_ws, "notification")


@SQLITE_ONLY
async def test_a_missing_or_bad_token_closes_with_1008(ws_url: str) -> None:
    for token in (None, "not.a.jwt"):
        async with connect_ws(f"{ws_url}/ws/notifications", token) as websocket:
            assert await close_code(websocket) == 1008


@SQLITE_ONLY
async def test_publishing_over_http_is_for_superusers_and_says_what_is_wrong(
    client: AsyncClient, auth_headers: AuthHeaders, session_factory: async_sessionmaker[AsyncSession]
) -> None:
    root = await superuser_headers(auth_headers, session_factory)
    alice = await auth_headers("alice")
    notification = {"topic": "orders/7", "data": 1}
    assert (await client.post("/notifications", json=notification)).status_code == 401
    assert (await client.post("/notifications", json=notification, headers=alice)).status_code == 403
    cases: list[tuple[dict[str, Any], int]] = [
        ({"data": 1}, 422),
        ({"topic": "orders/7", "username": "alice"}, 422),
        ({"topic": "orders/+"}, 422),
        ({"topic": ""}, 422),
        ({"username": "nobody"}, 404),
        ({"username": "alice", "data": {"deep": [1, 2, {"ok": True}]}}, 202),
    ]
    for body, status in cases:
        response = await client.post("/notifications", json=body, headers=root)
        assert response.status_code == status, (body, response.text)
        assert response.json().get("detail") or status == 202


@SQLITE_ONLY
async def test_publishing_while_the_broker_is_unreachable_answers_503(settings: Settings) -> None:
    await create_tables(settings.database_url)
    unreachable = settings.model_copy(
        update={
            "broker_url": "redis://127.0.0.1:1/0",
            "first_superuser": "root",
            "first_superuser_password": SecretStr(PASSWORD),
        }
    )
    app = create_app(unreachable)
    async with (
        LifespanManager(app),
        AsyncClient(transport=ASGITransport(app=app), base_url="http://test") as client,
    ):
        token = await client.post("/auth/token", data={"username": "root", "password": PASSWORD})
        root = {"Authorization": f"Bearer {token.json()['access_token']}"}
        response = await client.post("/notifications", json={"topic": "orders/7", "data": 1}, headers=root)
    assert response.status_code == 503
    assert response.json() == {
        "detail": "The message broker cannot be reached, so nothing was sent; try again later"
    }


@SQLITE_ONLY
async def test_the_openapi_document_describes_publishing(client: AsyncClient) -> None:
    document = (await client.get("/openapi.json")).json()
    operation = document["paths"]["/notifications"]["post"]
    assert set(operation["responses"]) == {"202", "401", "403", "404", "422", "503"}
    for schema in ("NotificationCreate", "NotificationPublic"):
        properties = document["components"]["schemas"][schema]["properties"]
        assert all("examples" in field for field in properties.values()), schema


@pytest.mark.slow
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_a_users_notification_reaches_their_connections_on_every_instance(
    database_url: str, redis_url: str, broker_channel: str, process_group: ProcessGroup
) -> None:
    await create_tables(database_url)
    first, second = start_instances(process_group, instance_env(database_url, redis_url, broker_channel))
    async with httpx.AsyncClient(base_url=first.base_url, timeout=10) as http:
        root, alice = await log_in(http, "root", register=False), await log_in(http, "alice")
        async with (
            connect_ws(f"{first.ws_url}/ws/notifications", alice) as on_first,
            connect_ws(f"{second.ws_url}/ws/notifications", alice) as on_second,
        ):
            for websocket in (on_first, on_second):
                await own_topic_subscribed(websocket, "alice")
            published = await http.post(
                "/notifications",
                json={"username": "alice", "data": "hello"},
                headers={"Authorization": f"Bearer {root}"},
            )
            assert published.status_code == 202
            expected = {"type": "notification", "topic": "users/alice/notifications", "data": "hello"}
            assert await receive_json(on_first) == await receive_json(on_second) == expected
