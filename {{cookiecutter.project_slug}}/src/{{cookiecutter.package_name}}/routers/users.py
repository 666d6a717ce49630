"""The authenticated user's own account."""

from __future__ import annotations

from fastapi import APIRouter, status

from ..deps import CurrentUser
from ..schemas import ErrorResponse, UserPublic

router = APIRouter(prefix="/users", tags=["users"])


@router.get(
    "/me",
    summary="The account the access token belongs to",
    responses={status.HTTP_401_UNAUTHORIZED: {"model": ErrorResponse, "description": "Missing or bad token"}},
)
async def read_me(user: CurrentUser) -> UserPublic:
    return UserPublic.model_validate(user)
