"""Registration, login and the current user; tokens that must be refused."""

from __future__ import annotations

import base64
import json
import secrets
import time
from datetime import UTC, datetime, timedelta

import pytest
from fastapi import HTTPException
from httpx import AsyncClient
from jose import jwt
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from {{ cookiecutter.package_name }}.db.models import User
from {{ cookiecutter.package_name }}.deps import get_current_superuser
from {{ cookiecutter.package_name }}.security import tokens
from {{ cookiecutter.package_name }}.security.tokens import (
    InvalidTokenError,
    create_access_token,
    decode_access_token,
)
from {{ cookiecutter.package_name }}.settings import Settings

from .support import PASSWORD, AuthHeaders


async def test_register_returns_the_account_without_its_password(client: AsyncClient) -> None:
    response = await client.post("/auth/register", json={"username": "alice", "password": PASSWORD})
    assert response.status_code == 201
    body = response.json()
    assert body["username"] == "alice"
    assert body["is_active"] is True
    assert body["is_superuser"] is False
    assert body["created_at"].endswith("Z")
    assert "password" not in response.text


async def test_register_refuses_a_taken_username(client: AsyncClient) -> None:
    await client.post("/auth/register", json={"username": "alice", "password": PASSWORD})
    response = await client.post("/auth/register", json={"username": "alice", "password": "another-password"})
    assert response.status_code == 409
    assert response.json() == {"detail": "The username 'alice' is already taken"}


@pytest.mark.parametrize(
    ("username", "password", "field"),
    [
        ("al", PASSWORD, "username"),
        ("al ice", PASSWORD, "username"),
        ("a" * 33, PASSWORD, "username"),
        ("alice", "short", "password"),
    ],
    ids=["too-short-name", "space-in-name", "too-long-name", "too-short-password"],
)
async def test_register_says_which_field_is_wrong(
    client: AsyncClient, username: str, password: str, field: str
) -> None:
    response = await client.post("/auth/register", json={"username": username, "password": password})
    assert response.status_code == 422
    assert [error["loc"] for error in response.json()["detail"]] == [["body", field]]


async def test_login_issues_a_bearer_token_for_the_configured_lifetime(
    client: AsyncClient, settings: Settings
) -> None:
    await client.post("/auth/register", json={"username": "alice", "password": PASSWORD})
    response = await client.post("/auth/token", data={"username": "alice", "password": PASSWORD})
    assert response.status_code == 200
    body = response.json()
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == settings.access_token_expire_minutes * 60
    me = await client.get("/users/me", headers={"Authorization": f"Bearer {body['access_token']}"})
    assert me.status_code == 200
    assert me.json()["username"] == "alice"


@pytest.mark.parametrize(
    ("username", "password"), [("alice", "wrong-password"), ("nobody", PASSWORD)], ids=["wrong", "unknown"]
)
async def test_login_refuses_bad_credentials_alike(client: AsyncClient, username: str, password: str) -> None:
    await client.post("/auth/register", json={"username": "alice", "password": PASSWORD})
    response = await client.post("/auth/token", data={"username": username, "password": password})
    assert response.status_code == 401
    assert response.json() == {"detail": "Incorrect username or password"}
    assert response.headers["WWW-Authenticate"] == "Bearer"


async def test_a_disabled_account_can_neither_log_in_nor_use_its_tokens(
    client: AsyncClient, auth_headers: AuthHeaders, session_factory: async_sessionmaker[AsyncSession]
) -> None:
    headers = await auth_headers("alice")
    async with session_factory() as session:
        await session.execute(update(User).where(User.username == "alice").values(is_active=False))
        await session.commit()
    login = await client.post("/auth/token", data={"username": "alice", "password": PASSWORD})
    assert login.status_code == 403
    assert login.json() == {"detail": "This account is disabled"}
    assert (await client.get("/users/me", headers=headers)).status_code == 401


async def test_users_me_requires_a_token(client: AsyncClient) -> None:
    response = await client.get("/users/me")
    assert response.status_code == 401
    assert response.json() == {"detail": "Not authenticated"}


def _segment(value: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()


def _claims(subject: str, *, expires_in: timedelta = timedelta(minutes=5)) -> dict[str, object]:
    now = datetime.now(UTC)
    return {"sub": subject, "iat": int(now.timestamp()), "exp": int((now + expires_in).timestamp())}


def forged_tokens(secret: str, user_id: int) -> dict[str, str]:
    """Tokens for `user_id` (or for nobody) that a correct server refuses, by the attack they stand for."""
    subject = str(user_id)
    valid = create_access_token(subject=subject, secret_key=secret, expires_in=timedelta(minutes=5))
    header, payload, signature = valid.split(".")
    altered_signature = signature[:10] + ("A" if signature[10] != "A" else "B") + signature[11:]
    extended_payload = _segment(_claims(subject, expires_in=timedelta(days=365)))
    return {
        "expired": create_access_token(subject=subject, secret_key=secret, expires_in=timedelta(seconds=-1)),
        "lifetime-extended": f"{header}.{extended_payload}.{signature}",
        "signature-altered": f"{header}.{payload}.{altered_signature}",
        "alg-none": f"{_segment({'alg': 'none', 'typ': 'JWT'})}.{_segment(_claims(subject))}.",
        "other-key": jwt.encode(_claims(subject), "another-secret-of-enough-length-000", algorithm="HS256"),
        "other-algorithm": jwt.encode(_claims(subject), secret, algorithm="HS512"),
        "no-expiry": jwt.encode({"sub": subject, "iat": _claims(subject)["iat"]}, secret, algorithm="HS256"),
        "unknown-user": create_access_token(
            subject="999999", secret_key=secret, expires_in=timedelta(minutes=5)
        ),
        "not-a-user-id": create_access_token(
            subject="alice", secret_key=secret, expires_in=timedelta(minutes=5)
        ),
        "garbage": "not.a.jwt",
    }


ATTACKS = list(forged_tokens("x" * 32, 1))


@pytest.mark.parametrize("attack", ATTACKS)
async def test_forged_and_stale_tokens_are_refused(
    client: AsyncClient, auth_headers: AuthHeaders, settings: Settings, attack: str
) -> None:
    headers = await auth_headers("alice")
    me = await client.get("/users/me", headers=headers)
    secret = settings.secret_key.get_secret_value()
    token = forged_tokens(secret, me.json()["id"])[attack]
    response = await client.get("/users/me", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"


def test_superuser_dependency_refuses_ordinary_users() -> None:
    superuser = User(username="root", hashed_password="-", is_active=True, is_superuser=True)
    assert get_current_superuser(superuser) is superuser
    with pytest.raises(HTTPException) as refused:
        get_current_superuser(User(username="alice", hashed_password="-", is_active=True, is_superuser=False))
    assert refused.value.status_code == 403


def test_a_token_kept_once_checked_still_expires_and_only_under_its_own_secret() -> None:
    secret = secrets.token_urlsafe(32)
    token = create_access_token(subject="7", secret_key=secret, expires_in=timedelta(seconds=2))
    claims = decode_access_token(token, secret_key=secret)
    kept = tokens._checked_claims.cache_info().hits
    assert decode_access_token(token, secret_key=secret) == claims
    assert tokens._checked_claims.cache_info().hits == kept + 1  # the second use is not checked again
    with pytest.raises(InvalidTokenError):
        decode_access_token(token, secret_key=secrets.token_urlsafe(32))
    time.sleep(max(claims.expires_at - time.time(), 0) + 0.05)
    with pytest.raises(InvalidTokenError, match="expired"):
        decode_access_token(token, secret_key=secret)
