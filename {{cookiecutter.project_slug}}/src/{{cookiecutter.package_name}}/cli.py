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

from .consumers.base import end_sessions
from .db import users
from .db.errors import AlreadyExistsError
from .db.session import create_engine, create_session_factory
from .db.users import create_user
from .http_limits import BoundedH11Protocol
from .observability import logging_config
from .realtime import WebSocketManager
from .schemas import UserCreate
from .security.passwords import PasswordHasher
from .settings import Settings, get_settings

APP_PROTOCOL = "{{ cookiecutter.package_name }}.websocket_protocol:FrameWritingProtocol"
"""The app's WebSocket protocol: uvicorn's websockets-sansio, writing the frames it fans out framed once."""


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
    for command, action in (("disable-user", "disable"), ("enable-user", "enable")):
        account = commands.add_parser(
            command,
            help=f"{action} an account",
            description="Disabling revokes the account's tokens and closes its WebSockets on every instance "
            "(at once with a Redis broker, else within ACCOUNT_CHECK_INTERVAL_SECONDS).",
        )
        account.add_argument("username")
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
    try:
        get_settings()
    except ValidationError as error:
        raise SystemExit(configuration_problems(error)) from None
    if args.command == "serve":
        app = "{{ cookiecutter.package_name }}.main:create_app"
        serve(app, args.host, args.port, workers=args.workers, ws=APP_PROTOCOL)
{%- if cookiecutter.use_gateway == "y" %}
    elif args.command == "gateway":
        serve_gateway(args.host, args.port, workers=args.workers)
{%- endif %}
    elif args.command == "create-superuser":
        return create_superuser(args.username)
    elif args.command in ("disable-user", "enable-user"):
        return set_active(args.username, active=args.command == "enable-user")
    return 0


def configuration_problems(error: ValidationError) -> str:
    """One line a problem of the configuration, naming its variable: what start-up says, not a traceback."""
    lines = []
    for problem in error.errors():
        message = problem["msg"].removeprefix("Value error, ")
        variable = "_".join(str(part) for part in problem["loc"]).upper()
        lines.append(f"error: {variable}: {message}" if variable else f"error: {message}")
    return "\n".join(lines)


def serve(factory: str, host: str, port: int, *, workers: int = 1, ws: str = "auto") -> None:
    """Run the app `factory` with uvicorn, logging as configured, until SIGTERM or Ctrl-C.

    On SIGTERM uvicorn stops accepting, closes WebSockets with 1012 (service restart) so that clients
    reconnect to another instance, and waits up to `SHUTDOWN_GRACE_SECONDS` for requests in flight.

    Bytes are bounded where they arrive: a WebSocket frame over `WS_MAX_MESSAGE_BYTES` (counted after
    permessage-deflate decompression) is never buffered whole, and HTTP goes through `BoundedH11Protocol`,
    which answers 431 to a request head over `HTTP_MAX_HEADER_BYTES` and closes a connection whose head is
    not in after `HTTP_HEADER_TIMEOUT_SECONDS`. permessage-deflate is negotiated with clients only with
    `WS_COMPRESSION=deflate`: compressed again for every connection, a frame costs far more to fan out.
    `ws` names uvicorn's WebSocket protocol (`auto`, or a class as `module:name`).
    """
    settings = get_settings()
    uvicorn.run(
        factory,
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_config=logging_config(settings),
        timeout_graceful_shutdown=settings.shutdown_grace_seconds,
        http=BoundedH11Protocol,
        h11_max_incomplete_event_size=settings.http_max_header_bytes,
        ws=ws,
        ws_max_size=settings.ws_max_message_bytes,
        ws_per_message_deflate=settings.ws_compression == "deflate",
    )


{% if cookiecutter.use_gateway == "y" -%}
def serve_gateway(host: str, port: int, *, workers: int) -> None:
    """Run the gateway; its workers share the port and split the upstreams' health checks between them.

    Its WebSockets are served by the gateway's own protocol, which relays their bytes once the upstream
    has accepted them (`gateway.websocket_relay`).
    """
    os.environ["GATEWAY_WORKERS"] = str(workers)  # read by each worker's settings
    relay = "{{ cookiecutter.package_name }}.gateway.websocket_relay:RelayProtocol"
    serve("{{ cookiecutter.package_name }}.gateway:create_gateway", host, port, workers=workers, ws=relay)


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


def set_active(username: str, *, active: bool) -> int:
    settings = get_settings()
    try:
        found = asyncio.run(_set_active(settings, username, active))
    except SQLAlchemyError as error:
        raise SystemExit(f"error: the database refused the write ({type(error).__name__})") from None
    if not found:
        raise SystemExit(f"error: there is no user {username!r}")
    print(f"{'Enabled' if active else 'Disabled'} {username!r}")
    return 0


async def _set_active(settings: Settings, username: str, active: bool) -> bool:
    engine = create_engine(settings.database_url)
    try:
        async with create_session_factory(engine)() as session:
            if await users.set_active(session, username=username, active=active) is None:
                return False
    finally:
        await engine.dispose()
    if not active and not settings.broker_url.startswith("memory://"):
        async with WebSocketManager(settings.broker_channel, settings.broker_url) as manager:
            await end_sessions(manager, username, "the account was disabled")
    return True


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
            await create_user(
                session,
                username=user_create.username,
                password=user_create.password,
                hasher=hasher,
                is_superuser=True,
            )
    finally:
        await engine.dispose()
