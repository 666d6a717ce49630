"""Shared by the app tests: the test password, the `auth_headers` fixture's type, creating the tables."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from {{ cookiecutter.package_name }}.db.models import Base
from {{ cookiecutter.package_name }}.db.session import create_engine

PASSWORD = "correct-horse-battery"

AuthHeaders = Callable[[str], Awaitable[dict[str, str]]]


async def create_tables(database_url: str) -> None:
    """The app's tables straight from the models; the migrations are checked against them separately."""
    engine = create_engine(database_url)
    try:
        async with engine.begin() as connection:
            await connection.run_sync(Base.metadata.create_all)
    finally:
        await engine.dispose()
