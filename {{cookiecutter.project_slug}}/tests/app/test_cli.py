"""The command line: a configuration it refuses, `create-superuser`, and `FIRST_SUPERUSER` at start-up."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from asgi_lifespan import LifespanManager
from httpx import ASGITransport, AsyncClient
from pydantic import SecretStr
from sqlalchemy import select

from {{ cookiecutter.package_name }}.cli import main
from {{ cookiecutter.package_name }}.db.models import User
from {{ cookiecutter.package_name }}.db.session import create_engine, create_session_factory
from {{ cookiecutter.package_name }}.main import create_app
from {{ cookiecutter.package_name }}.settings import Settings, get_settings

from .support import PASSWORD, create_tables


@pytest.fixture
def environment(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[pytest.MonkeyPatch]:
    """The command's environment: the test database with its tables, cheap hashing, no `.env` around."""
    asyncio.run(create_tables(database_url))
    monkeypatch.chdir(tmp_path)
    for name, value in {
        "ENVIRONMENT": "test",
        "SECRET_KEY": secrets.token_urlsafe(32),
        "DATABASE_URL": database_url,
        "ARGON2_TIME_COST": "1",
        "ARGON2_MEMORY_COST": "1024",
        "AUTH_ATTEMPTS_PER_ADDRESS": "1000000",  # every client logs in from the same address
        "AUTH_ATTEMPTS_PER_USERNAME": "1000000",
    }.items():
        monkeypatch.setenv(name, value)
    for name in ("FIRST_SUPERUSER", "FIRST_SUPERUSER_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    get_settings.cache_clear()
    yield monkeypatch
    get_settings.cache_clear()


@pytest.mark.parametrize("secret", ["change-me", "short"])
@pytest.mark.parametrize("command", [["serve"], ["create-superuser", "--username", "alice"]])
def test_a_weak_secret_in_production_stops_with_one_clear_line(
    environment: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], command: list[str], secret: str
) -> None:
    environment.setenv("ENVIRONMENT", "production")
    environment.setenv("SECRET_KEY", secret)
    with pytest.raises(SystemExit) as stopped:
        main(command)
    message = str(stopped.value.code)
    assert message.startswith("error: SECRET_KEY must be set to a random value"), message
    assert "\n" not in message
    assert "Traceback" not in capsys.readouterr().err


def test_a_bad_setting_is_named(environment: pytest.MonkeyPatch) -> None:
    environment.setenv("ACCESS_TOKEN_EXPIRE_MINUTES", "0")
    with pytest.raises(SystemExit) as stopped:
        main(["serve"])
    assert str(stopped.value.code).startswith("error: ACCESS_TOKEN_EXPIRE_MINUTES: "), stopped.value.code


def answer_password_prompts(monkeypatch: pytest.MonkeyPatch, *answers: str) -> list[str]:
    """Type `answers` at the hidden password prompts; the prompts shown."""
    prompts: list[str] = []
    remaining = iter(answers)

    def getpass(prompt: str = "Password: ") -> str:
        prompts.append(prompt)
        return next(remaining)

    monkeypatch.setattr("getpass.getpass", getpass)
    return prompts


def stored_user(database_url: str, username: str) -> User | None:
    async def load() -> User | None:
        engine = create_engine(database_url)
        try:
            async with create_session_factory(engine)() as session:
                return await session.scalar(select(User).where(User.username == username))
        finally:
            await engine.dispose()

    return asyncio.run(load())


def test_create_superuser_asks_for_the_password_twice_without_echo(
    environment: pytest.MonkeyPatch, database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    prompts = answer_password_prompts(environment, PASSWORD, PASSWORD)
    assert main(["create-superuser", "--username", "root"]) == 0
    assert prompts == ["Password: ", "Password (again): "]
    output = capsys.readouterr()
    assert output.out == "Created superuser 'root'\n"
    assert PASSWORD not in output.out + output.err
    user = stored_user(database_url, "root")
    assert user is not None
    assert user.is_superuser
    assert user.hashed_password.startswith("$argon2id$")


def test_create_superuser_reads_the_first_superuser_settings(
    environment: pytest.MonkeyPatch, database_url: str
) -> None:
    environment.setenv("FIRST_SUPERUSER", "admin")
    environment.setenv("FIRST_SUPERUSER_PASSWORD", PASSWORD)
    assert main(["create-superuser"]) == 0
    user = stored_user(database_url, "admin")
    assert user is not None
    assert user.is_superuser


@pytest.mark.parametrize(
    ("answers", "message"),
    [
        ((PASSWORD, "something-else"), "error: the passwords differ"),
        (("short", "short"), "error: password: String should have at least 8 characters"),
    ],
    ids=["mismatch", "too-short"],
)
def test_create_superuser_refuses_bad_passwords(
    environment: pytest.MonkeyPatch, database_url: str, answers: tuple[str, str], message: str
) -> None:
    answer_password_prompts(environment, *answers)
    with pytest.raises(SystemExit) as exit_info:
        main(["create-superuser", "--username", "root"])
    assert exit_info.value.code == message
    assert stored_user(database_url, "root") is None


def test_create_superuser_refuses_an_existing_username(environment: pytest.MonkeyPatch) -> None:
    environment.setenv("FIRST_SUPERUSER_PASSWORD", PASSWORD)
    assert main(["create-superuser", "--username", "root"]) == 0
    with pytest.raises(SystemExit) as exit_info:
        main(["create-superuser", "--username", "root"])
    assert exit_info.value.code == "error: The username 'root' is already taken"


async def test_first_superuser_is_created_at_start_up_once(settings: Settings) -> None:
    await create_tables(settings.database_url)
    settings = settings.model_copy(
        update={"first_superuser": "admin", "first_superuser_password": SecretStr(PASSWORD)}
    )
    for _start in range(2):
        app = create_app(settings)
        async with (
            LifespanManager(app),
            AsyncClient(transport=ASGITransport(app=app), base_url="http://test") as client,
        ):
            token = await client.post("/auth/token", data={"username": "admin", "password": PASSWORD})
            assert token.status_code == 200
            headers = {"Authorization": f"Bearer {token.json()['access_token']}"}
            me = (await client.get("/users/me", headers=headers)).json()
            assert me["is_superuser"] is True
