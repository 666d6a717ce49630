"""Password hashing: argon2 for new hashes, bcrypt accepted and upgraded, unknown users cost the same."""

from __future__ import annotations

import statistics
import time

import pytest
from fastapi import FastAPI
from httpx import AsyncClient
from passlib.hash import bcrypt
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from {{ cookiecutter.package_name }}.db.models import User
from {{ cookiecutter.package_name }}.security.passwords import PasswordHasher
from {{ cookiecutter.package_name }}.settings import Settings

from .support import PASSWORD


async def test_new_hashes_are_argon2id_with_the_configured_cost() -> None:
    hasher = PasswordHasher(argon2_time_cost=2, argon2_memory_cost=2048)
    hashed = await hasher.hash(PASSWORD)
    assert hashed.startswith("$argon2id$v=19$m=2048,t=2,")
    assert await hasher.verify_and_update(PASSWORD, hashed) == (True, None)
    assert await hasher.verify_and_update("wrong-password", hashed) == (False, None)


async def test_the_default_cost_is_production_strength() -> None:
    hasher = PasswordHasher.from_settings(Settings(_env_file=None))
    assert (await hasher.hash(PASSWORD)).startswith("$argon2id$v=19$m=65536,t=3,")


async def test_a_cheaper_argon2_hash_is_upgraded_on_verification() -> None:
    cheap = await PasswordHasher(argon2_time_cost=1, argon2_memory_cost=1024).hash(PASSWORD)
    valid, new_hash = await PasswordHasher(argon2_time_cost=2, argon2_memory_cost=1024).verify_and_update(
        PASSWORD, cheap
    )
    assert valid
    assert new_hash is not None
    assert new_hash.startswith("$argon2id$v=19$m=1024,t=2,")


async def test_a_bcrypt_hash_logs_in_and_is_replaced_by_argon2(
    client: AsyncClient, session_factory: async_sessionmaker[AsyncSession]
) -> None:
    async with session_factory() as session:
        session.add(User(username="legacy", hashed_password=bcrypt.using(rounds=4).hash(PASSWORD)))
        await session.commit()

    first = await client.post("/auth/token", data={"username": "legacy", "password": PASSWORD})
    assert first.status_code == 200

    async with session_factory() as session:
        stored = await session.scalar(select(User.hashed_password).where(User.username == "legacy"))
    assert stored is not None
    assert stored.startswith("$argon2id$")
    again = await client.post("/auth/token", data={"username": "legacy", "password": PASSWORD})
    assert again.status_code == 200


async def _median_login_cpu_seconds(client: AsyncClient, username: str, password: str) -> float:
    """The process's CPU time a failed login costs: the work the server does, which the clock of a busy
    machine would blur (the hashing thread waits for a core as long as the other tests keep it)."""
    durations = []
    for _ in range(5):
        started = time.process_time()
        response = await client.post("/auth/token", data={"username": username, "password": password})
        durations.append(time.process_time() - started)
        assert response.status_code == 401
    return statistics.median(durations)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_an_unknown_username_takes_as_long_as_a_wrong_password(
    app: FastAPI, client: AsyncClient
) -> None:
    # Costly enough that skipping the verification would show: tens of milliseconds against about one.
    app.state.password_hasher = PasswordHasher(argon2_time_cost=2, argon2_memory_cost=16 * 1024)
    await client.post("/auth/register", json={"username": "alice", "password": PASSWORD})
    wrong_password = await _median_login_cpu_seconds(client, "alice", "wrong-password")
    unknown_user = await _median_login_cpu_seconds(client, "nobody", "wrong-password")
    assert unknown_user > wrong_password / 2
