"""Publishing notifications from the server side, to a topic or to a user, on every instance."""

from __future__ import annotations

from typing import Any, Self

from fastapi import APIRouter, Depends, HTTPException, status
from pydantic import BaseModel, Field, JsonValue, field_validator, model_validator

from ..consumers.notifications import notification, user_topic
from ..db import users
from ..deps import ManagerDep, SessionDep, get_current_superuser
from ..realtime import BrokerUnavailable, InvalidTopic, validate_topic
from ..schemas import USERNAME_PATTERN, ErrorResponse


class NotificationCreate(BaseModel):
    topic: str | None = Field(
        default=None,
        description="A topic name (no `+` or `#`); WebSocket clients whose filters match it receive it.",
        examples=["orders/7/status"],
    )
    username: str | None = Field(
        default=None,
        pattern=USERNAME_PATTERN,
        description="Instead of a topic: every connection of this user receives it, "
        "on the topic `users/<username>/notifications`.",
        examples=["alice"],
    )
    data: JsonValue = Field(
        default=None,
        description="Any JSON; the browser client shows `title` and `text`.",
        examples=[{"title": "Order shipped", "text": "Order 7 is on its way."}],
    )

    @field_validator("topic")
    @classmethod
    def _topic_is_a_name(cls, topic: str | None) -> str | None:
        if topic is not None:
            try:
                validate_topic(topic)
            except InvalidTopic as error:
                raise ValueError(error.detail) from None
        return topic

    @model_validator(mode="after")
    def _one_recipient(self) -> Self:
        if (self.topic is None) == (self.username is None):
            raise ValueError("give either a topic or a username, not both")
        return self


class NotificationPublic(BaseModel):
    topic: str = Field(examples=["users/alice/notifications"])
    data: JsonValue = Field(examples=[{"title": "Order shipped", "text": "Order 7 is on its way."}])


def _error(description: str) -> dict[str, Any]:
    return {"model": ErrorResponse, "description": description}


router = APIRouter(
    prefix="/notifications",
    tags=["notifications"],
    dependencies=[Depends(get_current_superuser)],
    responses={
        status.HTTP_401_UNAUTHORIZED: _error("Missing or bad token"),
        status.HTTP_403_FORBIDDEN: _error("The user is not a superuser"),
    },
)


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    summary="Publish a notification to a topic, or to every connection of a user (superusers)",
    description="Delivery is at most once, to the connections open now: nothing is stored.",
    responses={
        status.HTTP_404_NOT_FOUND: _error("No user has this username"),
        status.HTTP_503_SERVICE_UNAVAILABLE: _error("The message broker cannot be reached: nothing was sent"),
    },
)
async def publish_notification(
    notification_create: NotificationCreate, session: SessionDep, manager: ManagerDep
) -> NotificationPublic:
    topic = notification_create.topic
    if notification_create.username is not None:
        if await users.get_user_by_username(session, username=notification_create.username) is None:
            raise HTTPException(
                status_code=status.HTTP_404_NOT_FOUND,
                detail=f"No user is named {notification_create.username!r}",
            )
        topic = user_topic(notification_create.username)
    assert topic is not None  # one of the two, as the model checked
    try:
        await manager.send(notification(topic, notification_create.data))
    except BrokerUnavailable:
        raise HTTPException(
            status_code=status.HTTP_503_SERVICE_UNAVAILABLE,
            detail="The message broker cannot be reached, so nothing was sent; try again later",
        ) from None
    return NotificationPublic(topic=topic, data=notification_create.data)
