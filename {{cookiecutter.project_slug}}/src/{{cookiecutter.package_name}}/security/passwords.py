"""Password hashing through passlib: argon2 for new hashes; bcrypt hashes still verify and get rehashed.

Hashing is slow and takes memory on purpose (Argon2: `ARGON2_MEMORY_COST` each), so it runs in a worker
thread, never on the event loop, and at most `PASSWORD_HASH_CONCURRENCY` hashes run at once in a process: the
others wait their turn, so a burst of logins costs time, not memory. A password that a scheme cannot take
(over 4096 bytes for passlib, over 72 bytes for bcrypt) simply does not match.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable
from functools import cached_property
from typing import TypeVar

from fastapi.concurrency import run_in_threadpool
from passlib.context import CryptContext
from passlib.exc import PasswordSizeError

from ..settings import Settings

T = TypeVar("T")


class PasswordHasher:
    def __init__(self, *, argon2_time_cost: int, argon2_memory_cost: int, max_concurrent: int = 2) -> None:
        self._context = CryptContext(
            schemes=["argon2", "bcrypt"],
            deprecated=["bcrypt"],
            argon2__rounds=argon2_time_cost,
            argon2__memory_cost=argon2_memory_cost,
        )
        self._slots = asyncio.Semaphore(max_concurrent)

    @classmethod
    def from_settings(cls, settings: Settings) -> PasswordHasher:
        return cls(
            argon2_time_cost=settings.argon2_time_cost,
            argon2_memory_cost=settings.argon2_memory_cost,
            max_concurrent=settings.password_hash_concurrency,
        )

    async def hash(self, password: str) -> str:
        return await self._run(self._context.hash, password)

    async def verify_and_update(self, password: str, hashed: str) -> tuple[bool, str | None]:
        """Whether `password` matches, and a new hash to store when the old one is deprecated or weaker."""
        try:
            return await self._run(self._context.verify_and_update, password, hashed)
        except (PasswordSizeError, ValueError):  # too long for the scheme (bcrypt's is 72 bytes)
            return False, None

    async def verify_dummy(self, password: str) -> None:
        """Spend the time of a real verification, so that timing does not tell whether an account exists."""
        await self._run(self._verify_against_dummy, password)

    async def _run(self, function: Callable[..., T], *args: str) -> T:
        async with self._slots:
            return await run_in_threadpool(function, *args)

    @cached_property
    def _dummy_hash(self) -> str:
        return self._context.hash(secrets.token_urlsafe(16))

    def _verify_against_dummy(self, password: str) -> None:
        try:
            self._context.verify(password, self._dummy_hash)
        except PasswordSizeError:
            self._context.verify(password[:64], self._dummy_hash)
