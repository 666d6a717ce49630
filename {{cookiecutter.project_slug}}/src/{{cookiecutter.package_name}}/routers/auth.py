"""Registration and the OAuth2 password flow that issues access tokens."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, status
from fastapi.security import OAuth2PasswordRequestForm

from ..db import users
from ..db.errors import AlreadyExistsError
from ..deps import PasswordHasherDep, SessionDep, SettingsDep
from ..schemas import ErrorResponse, Token, UserCreate, UserPublic
from ..security.tokens import create_access_token

router = APIRouter(prefix="/auth", tags=["auth"])


@router.post(
    "/register",
    status_code=status.HTTP_201_CREATED,
    summary="Create an account",
    responses={status.HTTP_409_CONFLICT: {"model": ErrorResponse, "description": "The username is taken"}},
)
async def register(user_create: UserCreate, session: SessionDep, hasher: PasswordHasherDep) -> UserPublic:
    try:
        user = await users.create_user(session, user_create=user_create, hasher=hasher)
    except AlreadyExistsError as error:
        raise HTTPException(status_code=status.HTTP_409_CONFLICT, detail=str(error)) from error
    return UserPublic.model_validate(user)


@router.post(
    "/token",
    summary="Log in: exchange a username and password for an access token",
    responses={
        status.HTTP_401_UNAUTHORIZED: {"model": ErrorResponse, "description": "Wrong username or password"},
        status.HTTP_403_FORBIDDEN: {"model": ErrorResponse, "description": "The account is disabled"},
    },
)
async def login(
    form: Annotated[OAuth2PasswordRequestForm, Depends()],
    session: SessionDep,
    settings: SettingsDep,
    hasher: PasswordHasherDep,
) -> Token:
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
        subject=str(user.id), secret_key=settings.secret_key.get_secret_value(), expires_in=expires_in
    )
    return Token(access_token=access_token, expires_in=int(expires_in.total_seconds()))
