"""Registration and the OAuth2 password flow that issues access tokens.

Both are limited per client address and per username (`AUTH_ATTEMPTS_PER_ADDRESS`,
`AUTH_ATTEMPTS_PER_USERNAME` in `AUTH_RATE_WINDOW_SECONDS`, on every instance together with a Redis broker):
an attempt over a limit is answered 429 with `Retry-After`, before any password is hashed.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, status
from fastapi.security import OAuth2PasswordRequestForm

from ..consumers.base import end_sessions
from ..db import users
from ..db.errors import AlreadyExistsError
from ..deps import AttemptLimitDep, CurrentUser, ManagerDep, PasswordHasherDep, SessionDep, SettingsDep
from ..schemas import ErrorResponse, PasswordChange, Token, UserCreate, UserPublic
from ..security.tokens import create_access_token

router = APIRouter(prefix="/auth", tags=["auth"])
TOO_MANY_ATTEMPTS = {"model": ErrorResponse, "description": "Too many attempts: wait `Retry-After` seconds"}


@router.post(
    "/register",
    status_code=status.HTTP_201_CREATED,
    summary="Create an account",
    responses={
        status.HTTP_409_CONFLICT: {"model": ErrorResponse, "description": "The username is taken"},
        status.HTTP_429_TOO_MANY_REQUESTS: TOO_MANY_ATTEMPTS,
    },
)
async def register(
    user_create: UserCreate, session: SessionDep, hasher: PasswordHasherDep, limit_attempts: AttemptLimitDep
) -> UserPublic:
    await limit_attempts(user_create.username)
    try:
        user = await users.create_user(
            session, username=user_create.username, password=user_create.password, hasher=hasher
        )
    except AlreadyExistsError as error:
        raise HTTPException(status_code=status.HTTP_409_CONFLICT, detail=str(error)) from error
    return UserPublic.model_validate(user)


@router.post(
    "/token",
    summary="Log in: exchange a username and password for an access token",
    responses={
        status.HTTP_401_UNAUTHORIZED: {"model": ErrorResponse, "description": "Wrong username or password"},
        status.HTTP_403_FORBIDDEN: {"model": ErrorResponse, "description": "The account is disabled"},
        status.HTTP_429_TOO_MANY_REQUESTS: TOO_MANY_ATTEMPTS,
    },
)
async def login(
    form: Annotated[OAuth2PasswordRequestForm, Depends()],
    session: SessionDep,
    settings: SettingsDep,
    hasher: PasswordHasherDep,
    limit_attempts: AttemptLimitDep,
) -> Token:
    await limit_attempts(form.username)
    user = await users.authenticate(session, username=form.username, password=form.password, hasher=hasher)
    if user is None:
        raise HTTPException(
            status_code=status.HTTP_401_UNAUTHORIZED,
            detail="Incorrect username or password",
            headers={"WWW-Authenticate": "Bearer"},
        )
    if not user.is_active:
        raise HTTPException(status_code=status.HTTP_403_FORBIDDEN, detail="This account is disabled")
    expires_in = timedelta(minutes=settings.access_token_expire_minutes)
    access_token = create_access_token(
        subject=str(user.id),
        secret_key=settings.secret_key.get_secret_value(),
        expires_in=expires_in,
        token_key=user.token_key,
    )
    return Token(access_token=access_token, expires_in=int(expires_in.total_seconds()))


@router.post(
    "/logout",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Log out everywhere: revoke every token of the account and close its WebSockets",
    responses={status.HTTP_401_UNAUTHORIZED: {"model": ErrorResponse, "description": "Missing or bad token"}},
)
async def logout(user: CurrentUser, session: SessionDep, manager: ManagerDep) -> None:
    await users.revoke_tokens(session, user=user)
    await end_sessions(manager, user.username, "logged out")


@router.post(
    "/password",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Change the password: every token issued before is revoked and the account's WebSockets closed",
    responses={
        status.HTTP_401_UNAUTHORIZED: {"model": ErrorResponse, "description": "Bad token or password"},
        status.HTTP_429_TOO_MANY_REQUESTS: TOO_MANY_ATTEMPTS,
    },
)
async def change_password(
    change: PasswordChange,
    user: CurrentUser,
    session: SessionDep,
    hasher: PasswordHasherDep,
    limit_attempts: AttemptLimitDep,
    manager: ManagerDep,
) -> None:
    await limit_attempts(user.username)
    valid, _ = await hasher.verify_and_update(change.current_password, user.hashed_password)
    if not valid:
        raise HTTPException(status_code=status.HTTP_401_UNAUTHORIZED, detail="The current password is wrong")
    await users.change_password(session, user=user, password=change.new_password, hasher=hasher)
    await end_sessions(manager, user.username, "the password changed")
