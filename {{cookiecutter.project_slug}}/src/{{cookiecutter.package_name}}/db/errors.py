"""Database errors in the app's terms: a uniqueness violation that says what exists, an outage."""

from __future__ import annotations

from sqlalchemy.exc import IntegrityError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.ext.asyncio import AsyncSession

# The database is down or unreachable: a connection refused or dropped, or none to be had in time. The
# driver's own connection errors (asyncpg's refused connect) are OSErrors that SQLAlchemy does not wrap.
DATABASE_UNAVAILABLE = (OperationalError, InterfaceError, PoolTimeoutError, OSError)


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
