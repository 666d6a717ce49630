"""What the HTTP API takes (`XCreate`) and returns (`XPublic`), with examples for the OpenAPI docs."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import AliasPath, BaseModel, ConfigDict, Field

from .db.models import Role

USERNAME_PATTERN = r"^[A-Za-z0-9_.-]{3,32}$"
ROOM_NAME_PATTERN = r"^[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?$"
# Text without the NUL character, which PostgreSQL cannot store (SQLite would): refused alike on both.
NO_NUL_PATTERN = r"^[^\x00]*$"


class ErrorResponse(BaseModel):
    detail: str = Field(examples=["Room 'lobby' not found"])


class UserCreate(BaseModel):
    username: str = Field(
        pattern=USERNAME_PATTERN,
        description="3 to 32 letters, digits, `_`, `.` or `-`.",
        examples=["alice"],
    )
    password: str = Field(min_length=8, max_length=128, examples=["correct-horse-battery"])


class PasswordChange(BaseModel):
    current_password: str = Field(max_length=128, examples=["correct-horse-battery"])
    new_password: str = Field(min_length=8, max_length=128, examples=["staple-battery-horse"])


class UserPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int = Field(examples=[1])
    username: str = Field(examples=["alice"])
    is_active: bool = Field(examples=[True])
    is_superuser: bool = Field(examples=[False])
    created_at: datetime = Field(examples=["2025-01-31T12:00:00Z"])


class Token(BaseModel):
    access_token: str = Field(examples=["eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl"])
    token_type: Literal["bearer"] = Field(default="bearer", examples=["bearer"])
    expires_in: int = Field(description="Seconds until the token expires.", examples=[3600])


class RoomCreate(BaseModel):
    name: str = Field(
        pattern=ROOM_NAME_PATTERN,
        description="The room's address: 1 to 64 lowercase letters, digits and inner hyphens.",
        examples=["lobby"],
    )
    title: str = Field(min_length=1, max_length=200, pattern=NO_NUL_PATTERN, examples=["The lobby"])
    is_private: bool = Field(
        default=False, description="Private rooms are visible to their members only.", examples=[False]
    )


class RoomPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    name: str = Field(examples=["lobby"])
    title: str = Field(examples=["The lobby"])
    is_private: bool = Field(examples=[False])
    owner: str = Field(validation_alias=AliasPath("owner", "username"), examples=["alice"])
    created_at: datetime = Field(examples=["2025-01-31T12:00:00Z"])


class MembershipCreate(BaseModel):
    username: str = Field(
        description="The user to add to the room.", pattern=NO_NUL_PATTERN, examples=["bob"]
    )


class MembershipPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    room: str = Field(validation_alias=AliasPath("room", "name"), examples=["lobby"])
    user: str = Field(validation_alias=AliasPath("user", "username"), examples=["bob"])
    role: Role = Field(examples=[Role.MEMBER])


class MessagePublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int = Field(description="Unique among all the rooms' messages.", examples=[42])
    seq: int = Field(
        description="1, 2, 3... in each room, in the order the messages were stored; pages and replays "
        "start after one.",
        examples=[7],
    )
    room: str = Field(validation_alias=AliasPath("room", "name"), examples=["lobby"])
    user: str = Field(validation_alias=AliasPath("user", "username"), examples=["alice"])
    text: str = Field(examples=["Hello, world"])
    created_at: datetime = Field(examples=["2025-01-31T12:00:00Z"])
