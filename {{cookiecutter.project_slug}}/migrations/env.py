"""Alembic environment: migrates the database at `DATABASE_URL`, or at the URL a caller puts in
`config.attributes["database_url"]` when running Alembic from Python.
"""

from __future__ import annotations

import asyncio
from logging.config import fileConfig

from alembic import context
from alembic.autogenerate.api import AutogenContext
from sqlalchemy import text
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from {{ cookiecutter.package_name }}.db.models import Base, UTCDateTime
from {{ cookiecutter.package_name }}.settings import get_settings

config = context.config
# PostgreSQL's SQLSTATE for a database that does not exist (invalid_catalog_name).
MISSING_DATABASE = "3D000"
if config.config_file_name is not None:
    fileConfig(config.config_file_name, disable_existing_loggers=False)


def database_url() -> str:
    url: str | None = config.attributes.get("database_url")
    return url or get_settings().database_url


def render_item(type_: str, obj: object, autogen_context: AutogenContext) -> str | bool:
    """Write the models' UTC timestamp type as the column type it stores, so revisions need no app import."""
    if type_ == "type" and isinstance(obj, UTCDateTime):
        return "sa.DateTime(timezone=True)"
    return False


def run_migrations_offline() -> None:
    url = database_url()
    context.configure(
        url=url,
        target_metadata=Base.metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
        render_as_batch=url.startswith("sqlite"),
        render_item=render_item,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        # SQLite cannot alter most of a table in place; batch mode copies it into a new one instead.
        render_as_batch=connection.dialect.name == "sqlite",
        render_item=render_item,
    )
    with context.begin_transaction():
        context.run_migrations()


async def migrate(url: URL) -> None:
    engine = create_async_engine(url, poolclass=NullPool)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(run_migrations)
    finally:
        await engine.dispose()


async def create_database(url: URL) -> None:
    """Create the PostgreSQL database `url` names, from its server's `postgres` database."""
    engine = create_async_engine(
        url.set(database="postgres"), poolclass=NullPool, isolation_level="AUTOCOMMIT"
    )
    try:
        async with engine.connect() as connection:
            name = connection.dialect.identifier_preparer.quote(str(url.database))
            await connection.execute(text(f"CREATE DATABASE {name}"))
    finally:
        await engine.dispose()


async def run_migrations_online() -> None:
    """Migrate the database, creating it first if the server has none of that name (a fresh PostgreSQL)."""
    url = make_url(database_url())
    try:
        await migrate(url)
    except DBAPIError as error:
        if getattr(error.orig, "sqlstate", None) != MISSING_DATABASE:
            raise
        await create_database(url)
        await migrate(url)


if context.is_offline_mode():
    run_migrations_offline()
else:
    asyncio.run(run_migrations_online())
