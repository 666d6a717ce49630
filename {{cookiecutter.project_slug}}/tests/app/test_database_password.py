"""DATABASE_PASSWORD: a password with any character reaches the database, with no URL quoting by hand."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from {{ cookiecutter.package_name }}.db.session import create_engine
from {{ cookiecutter.package_name }}.settings import Settings

# Every character that ends or splits a URL's userinfo unless it is quoted.
AWKWARD_PASSWORD = "p@ss:w/rd#%?&= x"


def test_the_password_goes_into_the_url_quoted() -> None:
    settings = Settings(
        _env_file=None,
        database_url="postgresql+asyncpg://app@db.internal:5433/chat",
        database_password=AWKWARD_PASSWORD,
    )
    url = make_url(settings.database_url)
    assert (url.username, url.password, url.host, url.port, url.database) == (
        "app",
        AWKWARD_PASSWORD,
        "db.internal",
        5433,
        "chat",
    )


def test_it_replaces_a_password_in_the_url() -> None:
    settings = Settings(
        _env_file=None,
        database_url="postgresql+asyncpg://app:old@db.internal/chat",
        database_password=AWKWARD_PASSWORD,
    )
    assert make_url(settings.database_url).password == AWKWARD_PASSWORD


def test_without_it_the_url_is_left_alone() -> None:
    url = "postgresql+asyncpg://app:secret@db.internal/chat"
    assert Settings(_env_file=None, database_url=url).database_url == url


async def test_the_app_connects_with_it(postgres_database_url: str) -> None:
    """Against the real server: the URL still names its host and database once the password is in."""
    url = make_url(postgres_database_url)
    settings = Settings(
        _env_file=None,
        database_url=url.set(password=None).render_as_string(hide_password=False),
        database_password=url.password or AWKWARD_PASSWORD,
    )
    engine = create_engine(settings.database_url)
    try:
        async with engine.connect() as connection:
            assert (await connection.execute(text("SELECT current_database()"))).scalar() == url.database
    finally:
        await engine.dispose()


@pytest.mark.parametrize("password", ["", "   "])
def test_an_empty_password_is_still_a_password(password: str) -> None:
    settings = Settings(
        _env_file=None, database_url="postgresql+asyncpg://app@db.internal/chat", database_password=password
    )
    assert make_url(settings.database_url).password == password
