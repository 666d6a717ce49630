"""Alembic: the migrations apply and revert on both backends, and they describe exactly the models."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from sqlalchemy import Connection, MetaData, inspect, text

from {{ cookiecutter.package_name }}.db.models import Base
from {{ cookiecutter.package_name }}.db.session import create_engine

PROJECT_DIR = Path(__file__).resolve().parents[2]
TABLES = {"users", "rooms", "memberships", "messages"}


def alembic_config(database_url: str) -> Config:
    """The project's migrations, aimed at `database_url`, without the ini file's logging set-up."""
    config = Config()
    config.set_main_option("script_location", str(PROJECT_DIR / "migrations"))
    config.attributes["database_url"] = database_url
    return config


def run_on(database_url: str, inspection: Any) -> Any:
    """Run `inspection(connection)` on a synchronous connection to the database."""

    async def run() -> Any:
        engine = create_engine(database_url)
        try:
            async with engine.connect() as connection:
                return await connection.run_sync(inspection)
        finally:
            await engine.dispose()

    return asyncio.run(run())


def table_names(connection: Connection) -> set[str]:
    return set(inspect(connection).get_table_names()) - {"alembic_version"}


def differences_from_models(connection: Connection) -> list[Any]:
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    return list(compare_metadata(context, Base.metadata))


def test_upgrade_creates_a_postgresql_database_that_does_not_exist(postgres_database_url: str) -> None:
    missing_url = f"{postgres_database_url}_fresh"
    try:
        command.upgrade(alembic_config(missing_url), "head")
        assert run_on(missing_url, table_names) == TABLES
    finally:
        asyncio.run(drop_database(missing_url))


async def drop_database(url: str) -> None:
    server, name = url.replace("postgresql+asyncpg://", "postgresql://", 1).rsplit("/", 1)
    connection = await asyncpg.connect(f"{server}/postgres", timeout=5)
    try:
        await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await connection.close()


def test_upgrade_downgrade_upgrade(database_url: str) -> None:
    config = alembic_config(database_url)
    command.upgrade(config, "head")
    assert run_on(database_url, table_names) == TABLES
    command.downgrade(config, "base")
    assert run_on(database_url, table_names) == set()
    command.upgrade(config, "head")
    assert run_on(database_url, table_names) == TABLES


def test_migrations_match_the_models(database_url: str) -> None:
    command.upgrade(alembic_config(database_url), "head")
    assert run_on(database_url, differences_from_models) == []


def test_the_comparison_notices_a_model_the_migrations_lack(database_url: str) -> None:
    command.upgrade(alembic_config(database_url), "head")

    def differences_without_messages(connection: Connection) -> list[Any]:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        without_messages = MetaData(naming_convention=Base.metadata.naming_convention)
        for table in Base.metadata.sorted_tables:
            if table.name != "messages":
                table.to_metadata(without_messages)
        return list(compare_metadata(context, without_messages))

    differences = run_on(database_url, differences_without_messages)
    assert [difference[1].name for difference in differences if difference[0] == "remove_table"] == [
        "messages"
    ]


def test_existing_messages_are_numbered_per_room_and_the_numbers_go_on_downgrade(database_url: str) -> None:
    config = alembic_config(database_url)
    command.upgrade(config, "0001")

    def say(connection: Connection) -> None:
        connection.execute(
            text(
                "INSERT INTO users (id, username, hashed_password, is_active, is_superuser, created_at) "
                "VALUES (1, 'alice', 'x', true, false, CURRENT_TIMESTAMP)"
            )
        )
        for room_id, name in ((1, "lobby"), (2, "other"), (3, "empty")):
            connection.execute(
                text(
                    "INSERT INTO rooms (id, name, title, is_private, owner_id, created_at) "
                    "VALUES (:id, :name, :name, false, 1, CURRENT_TIMESTAMP)"
                ),
                {"id": room_id, "name": name},
            )
        for message_id, room_id in enumerate([1, 2, 1, 1, 2], start=1):
            connection.execute(
                text(
                    "INSERT INTO messages (id, room_id, user_id, text, created_at) "
                    "VALUES (:id, :room_id, 1, :text, CURRENT_TIMESTAMP)"
                ),
                {"id": message_id, "room_id": room_id, "text": f"message {message_id}"},
            )
        connection.commit()

    def numbered(connection: Connection) -> tuple[list[tuple[int, int, int]], list[tuple[str, int]]]:
        messages = connection.execute(text("SELECT id, room_id, seq FROM messages ORDER BY id"))
        rooms = connection.execute(text("SELECT name, last_seq FROM rooms ORDER BY name"))
        return [tuple(row) for row in messages], [tuple(row) for row in rooms]

    run_on(database_url, say)
    command.upgrade(config, "head")
    assert run_on(database_url, numbered) == (
        [(1, 1, 1), (2, 2, 1), (3, 1, 2), (4, 1, 3), (5, 2, 2)],
        [("empty", 0), ("lobby", 3), ("other", 2)],
    )
    command.downgrade(config, "0001")

    def columns(connection: Connection) -> tuple[set[str], int]:
        names = {column["name"] for column in inspect(connection).get_columns("messages")}
        count = connection.execute(text("SELECT count(*) FROM messages")).scalar_one()
        return names, count

    names, count = run_on(database_url, columns)
    assert "seq" not in names
    assert count == 5


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_alembic_command_migrates_the_database_url_setting(database_url: str, tmp_path: Path) -> None:
    environment = {**os.environ, "DATABASE_URL": database_url, "PYTHONPATH": str(PROJECT_DIR / "src")}
    subprocess.run(
        [sys.executable, "-m", "alembic", "-c", str(PROJECT_DIR / "alembic.ini"), "upgrade", "head"],
        cwd=tmp_path,
        env=environment,
        check=True,
        capture_output=True,
        timeout=60,
    )
    assert run_on(database_url, table_names) == TABLES
