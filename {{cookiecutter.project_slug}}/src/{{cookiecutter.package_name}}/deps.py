"""FastAPI dependencies, each with a one-line alias to annotate route parameters with.

They take an `HTTPConnection`, so the same dependencies serve HTTP routes and WebSocket endpoints.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, HTTPException, status
from fastapi.security import OAuth2PasswordBearer
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from starlette.requests import HTTPConnection

from .db import users
from .db.models import User
from .realtime import WebSocketManager
from .security.attempts import AttemptCounter
from .security.passwords import PasswordHasher
from .settings import Settings

oauth2_scheme = OAuth2PasswordBearer(tokenUrl="auth/token")


def get_app_settings(connection: HTTPConnection) -> Settings:
    settings: Settings = connection.app.state.settings
    return settings


def get_password_hasher(connection: HTTPConnection) -> PasswordHasher:
    hasher: PasswordHasher = connection.app.state.password_hasher
    return hasher


def get_attempts(connection: HTTPConnection) -> AttemptCounter:
    attempts: AttemptCounter = connection.app.state.attempts
    return attempts


def get_session_factory(connection: HTTPConnection) -> async_sessionmaker[AsyncSession]:
    factory: async_sessionmaker[AsyncSession] = connection.app.state.session_factory
    return factory


async def get_session(connection: HTTPConnection) -> AsyncIterator[AsyncSession]:
    async with get_session_factory(connection)() as session:
        yield session


def get_manager(connection: HTTPConnection) -> WebSocketManager:
    manager: WebSocketManager = connection.app.state.manager
    return manager


SettingsDep = Annotated[Settings, Depends(get_app_settings)]
PasswordHasherDep = Annotated[PasswordHasher, Depends(get_password_hasher)]
AttemptsDep = Annotated[AttemptCounter, Depends(get_attempts)]
SessionDep = Annotated[AsyncSession, Depends(get_session)]
# WebSocket consumers outlive a request: they open a short session from the factory for each piece of work.
SessionFactoryDep = Annotated[async_sessionmaker[AsyncSession], Depends(get_session_factory)]
ManagerDep = Annotated[WebSocketManager, Depends(get_manager)]
TokenDep = Annotated[str, Depends(oauth2_scheme)]


async def get_user_from_token(session: AsyncSession, *, token: str, settings: Settings) -> User | None:
    """The active user a raw access token was issued to, or None if the token or its user is not valid."""
    authenticated = await users.authenticate_token(session, token=token, settings=settings)
    return authenticated[0] if authenticated is not None else None


async def get_current_user(session: SessionDep, settings: SettingsDep, token: TokenDep) -> User:
    user = await get_user_from_token(session, token=token, settings=settings)
    if user is None:
        raise HTTPException(
            status_code=status.HTTP_401_UNAUTHORIZED,
            detail="Invalid or expired token, or its user no longer exists or is inactive",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return user


CurrentUser = Annotated[User, Depends(get_current_user)]


def get_current_superuser(user: CurrentUser) -> User:
    if not user.is_superuser:
        raise HTTPException(status_code=status.HTTP_403_FORBIDDEN, detail="Superuser privileges are required")
    return user


CurrentSuperuser = Annotated[User, Depends(get_current_superuser)]


class AttemptLimit:
    """Counts an attempt of one client address for a username, so that a route can refuse it with 429 before
    any password is hashed; the username comes from the body, the form or the user, hence a call."""

    def __init__(self, address: str, attempts: AttemptCounter, settings: Settings) -> None:
        self.address = address
        self.attempts = attempts
        self.settings = settings

    async def __call__(self, username: str) -> None:
        refusal = await self.attempts.hit(
            {
                f"address:{self.address}": self.settings.auth_attempts_per_address,
                f"username:{username.lower()[:64]}": self.settings.auth_attempts_per_username,
            }
        )
        if refusal is not None:
            raise HTTPException(
                status_code=status.HTTP_429_TOO_MANY_REQUESTS,
                detail="Too many attempts; try again later",
                headers={"Retry-After": str(refusal.retry_after)},
            )


def get_attempt_limit(
    connection: HTTPConnection, attempts: AttemptsDep, settings: SettingsDep
) -> AttemptLimit:
    address = connection.client.host if connection.client is not None else "unknown"
    return AttemptLimit(address, attempts, settings)


AttemptLimitDep = Annotated[AttemptLimit, Depends(get_attempt_limit)]
