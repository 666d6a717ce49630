"""Users: lookup, creation, authentication by password or token, and the changes that end their sessions.

Persistence sits above `security`: it hashes and checks passwords with `security.passwords` and reads access
tokens with `security.tokens`, while `security` stores nothing and imports nothing of `db`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypeGuard

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from ..security.passwords import PasswordHasher
from ..security.tokens import AccessClaims, InvalidTokenError, decode_access_token
from ..settings import Settings
from .errors import AlreadyExistsError, commit_new
from .models import User, new_token_key

MAX_USER_ID_DIGITS = 18  # a BIGINT has 19: a longer subject is no user id


async def get_user(session: AsyncSession, *, user_id: int) -> User | None:
    return await session.get(User, user_id)


async def get_user_by_username(session: AsyncSession, *, username: str) -> User | None:
    return await session.scalar(select(User).where(User.username == username))


async def create_user(
    session: AsyncSession,
    *,
    username: str,
    password: str,
    hasher: PasswordHasher,
    is_superuser: bool = False,
) -> User:
    """Raises `AlreadyExistsError` when the username is taken."""
    user = User(username=username, hashed_password=await hasher.hash(password), is_superuser=is_superuser)
    session.add(user)
    await commit_new(session, conflict=f"The username {username!r} is already taken")
    return user


async def ensure_superuser(
    session: AsyncSession, *, username: str, password: str, hasher: PasswordHasher
) -> bool:
    """Create this superuser unless the username exists (left as it is); whether it was created."""
    if await get_user_by_username(session, username=username) is not None:
        return False
    try:
        await create_user(session, username=username, password=password, hasher=hasher, is_superuser=True)
    except AlreadyExistsError:
        return False
    return True


async def authenticate(
    session: AsyncSession, *, username: str, password: str, hasher: PasswordHasher
) -> User | None:
    """The user whose password this is, or None; the stored hash is upgraded when it uses a deprecated scheme.

    An unknown username costs a password verification too, so the response time does not reveal it.
    """
    user = None if "\x00" in username else await get_user_by_username(session, username=username)
    if user is None:
        await hasher.verify_dummy(password)
        return None
    valid, new_hash = await hasher.verify_and_update(password, user.hashed_password)
    if not valid:
        return None
    if new_hash is not None:
        user.hashed_password = new_hash
        await session.commit()
    return user


async def authenticate_token(
    session: AsyncSession, *, token: str, settings: Settings
) -> tuple[User, AccessClaims] | None:
    """The active user a raw access token was issued to and the token's claims, or None if the token is not
    valid, or was revoked, or its user is gone or disabled."""
    try:
        claims = decode_access_token(token, secret_key=settings.secret_key.get_secret_value())
    except InvalidTokenError:
        return None
    user = await user_for_claims(session, claims=claims)
    return (user, claims) if user is not None else None


TokenHolder = tuple[str, str | None]
"""Whose a token is and with which token key: its claims' `subject` and `key`."""


async def user_for_claims(session: AsyncSession, *, claims: AccessClaims) -> User | None:
    """The active user a decoded token was issued to, or None if it was revoked or its user is gone or
    disabled."""
    if not _is_user_id(claims.subject):
        return None
    user = await get_user(session, user_id=int(claims.subject))
    return user if admits(user, token_key=claims.key) else None


async def users_for_tokens(
    session: AsyncSession, *, holders: Iterable[TokenHolder]
) -> dict[TokenHolder, User]:
    """The active users tokens of `holders` were issued to, read in one query; a holder whose tokens were
    revoked, or whose user is gone or disabled, is left out (as `user_for_claims` gives None)."""
    plausible = [(subject, key) for subject, key in holders if _is_user_id(subject)]
    if not plausible:
        return {}
    ids = {int(subject) for subject, _ in plausible}
    users = {user.id: user for user in await session.scalars(select(User).where(User.id.in_(ids)))}
    return {
        (subject, key): user
        for subject, key in plausible
        if admits(user := users.get(int(subject)), token_key=key)
    }


def admits(user: User | None, *, token_key: str | None) -> TypeGuard[User]:
    """Whether a token with `token_key` still lets `user` in: the account exists, is active, and its
    tokens were not revoked since (a revocation gives it a new token key)."""
    return user is not None and user.is_active and user.token_key == token_key


def _is_user_id(subject: str) -> bool:
    return subject.isdecimal() and len(subject) <= MAX_USER_ID_DIGITS


async def revoke_tokens(session: AsyncSession, *, user: User) -> None:
    """Revoke every token issued to `user` so far (a new token key)."""
    user.token_key = new_token_key()
    await session.commit()


async def change_password(
    session: AsyncSession, *, user: User, password: str, hasher: PasswordHasher
) -> None:
    """Set a new password and revoke every token issued before."""
    user.hashed_password = await hasher.hash(password)
    await revoke_tokens(session, user=user)


async def set_active(session: AsyncSession, *, username: str, active: bool) -> User | None:
    """Enable or disable an account (disabling revokes its tokens); None when there is no such user."""
    user = await get_user_by_username(session, username=username)
    if user is None:
        return None
    user.is_active = active
    if not active:
        user.token_key = new_token_key()
    await session.commit()
    return user
