"""The `{{ cookiecutter.project_slug }}` command: serve the app, and administrative tasks."""

from __future__ import annotations

import argparse
import asyncio
import getpass
{%- if cookiecutter.use_gateway == "y" %}
import os
{%- endif %}
from collections.abc import Sequence

import uvicorn
from pydantic import ValidationError
from sqlalchemy.exc import SQLAlchemyError

from .db.errors import AlreadyExistsError
from .db.session import create_engine, create_session_factory
from .db.users import create_user
from .observability import logging_config
from .schemas import UserCreate
from .security.passwords import PasswordHasher
from .settings import Settings, get_settings


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="{{ cookiecutter.project_slug }}", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the app with uvicorn")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--workers", type=int, default=1)
    superuser = commands.add_parser(
        "create-superuser",
        help="create a superuser in the database at DATABASE_URL",
        description="The password comes from FIRST_SUPERUSER_PASSWORD if set, else it is asked without echo.",
    )
    superuser.add_argument("--username", help="default: FIRST_SUPERUSER if set, else asked")
{%- if cookiecutter.use_gateway == "y" %}
    gateway = commands.add_parser("gateway", help="run the gateway in front of the app instances")
    gateway.add_argument("--host", default="127.0.0.1")
    gateway.add_argument("--port", type=int, default=8000)
    gateway.add_argument(
        "--workers", type=int, default=1, help="processes sharing the port; each WebSocket stays on one"
    )
{%- endif %}
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "serve":
        serve("{{ cookiecutter.package_name }}.main:create_app", args.host, args.port, workers=args.workers)
{%- if cookiecutter.use_gateway == "y" %}
    elif args.command == "gateway":
        serve_gateway(args.host, args.port, workers=args.workers)
{%- endif %}
    elif args.command == "create-superuser":
        return create_superuser(args.username)
    return 0


def serve(
    factory: str, host: str, port: int, *, workers: int = 1, ws_per_message_deflate: bool = True
) -> None:
    """Run the app `factory` with uvicorn, logging as configured, until SIGTERM or Ctrl-C.

    On SIGTERM uvicorn stops accepting, closes WebSockets with 1012 (service restart) so that clients
    reconnect to another instance, and waits up to `SHUTDOWN_GRACE_SECONDS` for requests in flight.
    """
    settings = get_settings()
    uvicorn.run(
        factory,
        factory=True,
        host=host,
        port=port,
        workers=workers,
        ws_per_message_deflate=ws_per_message_deflate,
        log_config=logging_config(settings),
        timeout_graceful_shutdown=settings.shutdown_grace_seconds,
    )


{% if cookiecutter.use_gateway == "y" -%}
def serve_gateway(host: str, port: int, *, workers: int) -> None:
    """Run the gateway; its workers share the port and split the upstreams' health checks between them."""
    os.environ["GATEWAY_WORKERS"] = str(workers)  # read by each worker's settings
    settings = get_settings()
    serve(
        "{{ cookiecutter.package_name }}.gateway:create_gateway",
        host,
        port,
        workers=workers,
        ws_per_message_deflate=settings.gateway_ws_compression == "deflate",
    )


{% endif -%}
def create_superuser(username: str | None) -> int:
    settings = get_settings()
    try:
        user_create = UserCreate(
            username=username or settings.first_superuser or input("Username: "),
            password=(
                settings.first_superuser_password.get_secret_value()
                if settings.first_superuser_password is not None
                else _ask_new_password()
            ),
        )
    except ValidationError as error:
        problems = (f"error: {problem['loc'][0]}: {problem['msg']}" for problem in error.errors())
        raise SystemExit("\n".join(problems)) from None
    try:
        asyncio.run(_create_superuser(settings, user_create))
    except AlreadyExistsError as error:
        raise SystemExit(f"error: {error}") from None
    except SQLAlchemyError as error:
        raise SystemExit(
            f"error: the database refused the write ({type(error).__name__}); "
            "is it reachable, and has `alembic upgrade head` run?"
        ) from None
    print(f"Created superuser {user_create.username!r}")
    return 0


def _ask_new_password() -> str:
    password = getpass.getpass("Password: ")
    if getpass.getpass("Password (again): ") != password:
        raise SystemExit("error: the passwords differ")
    return password


async def _create_superuser(settings: Settings, user_create: UserCreate) -> None:
    engine = create_engine(settings.database_url)
    try:
        async with create_session_factory(engine)() as session:
            hasher = PasswordHasher.from_settings(settings)
            await create_user(session, user_create=user_create, hasher=hasher, is_superuser=True)
    finally:
        await engine.dispose()
