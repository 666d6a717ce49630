"""Password hashing through passlib: argon2 for new hashes; bcrypt hashes still verify and get rehashed.

Hashing is slow on purpose, so it runs in a worker thread and never stalls the event loop.
"""

from __future__ import annotations

import secrets
from functools import cached_property

from fastapi.concurrency import run_in_threadpool
from passlib.context import CryptContext

from ..settings import Settings


class PasswordHasher:
    def __init__(self, *, argon2_time_cost: int, argon2_memory_cost: int) -> None:
        self._context = CryptContext(
            schemes=["argon2", "bcrypt"],
            deprecated=["bcrypt"],
            argon2__rounds=argon2_time_cost,
            argon2__memory_cost=argon2_memory_cost,
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> PasswordHasher:
        return cls(argon2_time_cost=settings.argon2_time_cost, argon2_memory_cost=settings.argon2_memory_cost)

    async def hash(self, password: str) -> str:
        return await run_in_threadpool(self._context.hash, password)

    async def verify_and_update(self, password: str, hashed: str) -> tuple[bool, str | None]:
        """Whether `password` matches, and a new hash to store when the old one is deprecated or weaker."""
        return await run_in_threadpool(self._context.verify_and_update, password, hashed)

    async def verify_dummy(self, password: str) -> None:
        """Spend the time of a real verification, so that timing does not tell whether an account exists."""
        await run_in_threadpool(self._verify_against_dummy, password)

    @cached_property
    def _dummy_hash(self) -> str:
        return self._context.hash(secrets.token_urlsafe(16))

    def _verify_against_dummy(self, password: str) -> None:
        self._context.verify(password, self._dummy_hash)
