"""Turning a uniqueness violation into an error that says what already exists."""

from __future__ import annotations

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession


class AlreadyExistsError(Exception):
    """The row would duplicate a unique name or membership; the message says which."""


async def commit_new(session: AsyncSession, *, conflict: str) -> None:
    """Commit the rows just added, raising `AlreadyExistsError(conflict)` if one of them is a duplicate.

    Checking first and inserting after would race with a concurrent request; the database decides instead.
    """
    try:
        await session.commit()
    except IntegrityError as error:
        await session.rollback()
        raise AlreadyExistsError(conflict) from error
