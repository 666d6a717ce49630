"""The application factory: `create_app()` wires settings, database, realtime engine and routers."""

from __future__ import annotations

import asyncio
import functools
import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request, status
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from . import __version__
from .consumers.base import AccountWatch
from .consumers.chat import RoomConsumer, room_presence
from .db.errors import DATABASE_UNAVAILABLE
from .db.message_log import MessageLog
from .db.rooms import RoomReads
from .db.session import create_engine, create_session_factory
from .db.users import ensure_superuser
from .http_limits import RequestLimitsMiddleware
from .middleware import InstanceHeaderMiddleware
from .observability import install_redaction
from .observability.app import instrument_app
from .realtime import PresenceTicks, RecoveryOptions, WebSocketManager
from .routers import auth, docs, health{% if cookiecutter.use_notifications == "y" %}, notifications{% endif %}, realtime, rooms, users
from .routers.realtime import ConsumerLane
from .schemas import UserCreate
from .security.attempts import AttemptCounter
from .security.passwords import PasswordHasher
from .settings import Settings, get_settings

STATIC_DIR = Path(__file__).parent / "static"
DATABASE_RETRY_AFTER_SECONDS = 5
GC_YOUNGEST_THRESHOLD = 10_000  # allocations per young collection (Python's own: 700; 2,000 on 3.13)
ECHOED_INPUT_CHARACTERS = 100
MESSAGE_LOG_CLOSE_SECONDS = 1.0  # the connections are closed by then: at most a batch a room is left

logger = logging.getLogger(__name__)


async def database_unavailable(request: Request, error: Exception) -> JSONResponse:
    """503 rather than 500 while the database is down: nothing is wrong with the request; try it again."""
    logger.warning("%s %s: the database is unavailable: %r", request.method, request.url.path, error)
    return JSONResponse(
        {"detail": "The database is unavailable; try again later"},
        status_code=status.HTTP_503_SERVICE_UNAVAILABLE,
        headers={"Retry-After": str(DATABASE_RETRY_AFTER_SECONDS)},
    )


async def invalid_request(request: Request, error: Exception) -> JSONResponse:
    """FastAPI's 422, but an input is echoed only when short: a large body is not sent back to its sender."""
    assert isinstance(error, RequestValidationError)
    problems = []
    for problem in error.errors():
        problem = {key: value for key, value in problem.items() if key != "ctx"}
        if len(repr(problem.get("input"))) > ECHOED_INPUT_CHARACTERS:
            del problem["input"]
        problems.append(problem)
    return JSONResponse(
        {"detail": jsonable_encoder(problems)}, status_code=status.HTTP_422_UNPROCESSABLE_CONTENT
    )


async def create_first_superuser(
    settings: Settings, session_factory: async_sessionmaker[AsyncSession], hasher: PasswordHasher
) -> None:
    """Create the `FIRST_SUPERUSER` account if both it and its password are set and it does not exist."""
    if settings.first_superuser is None or settings.first_superuser_password is None:
        return
    user_create = UserCreate(
        username=settings.first_superuser, password=settings.first_superuser_password.get_secret_value()
    )
    async with session_factory() as session:
        await ensure_superuser(
            session, username=user_create.username, password=user_create.password, hasher=hasher
        )


def create_manager(settings: Settings, presence: PresenceTicks) -> WebSocketManager:
    redis_options: dict[str, Any] = {
        "command_timeout": settings.broker_command_timeout_seconds,
        "health_check_interval": settings.broker_health_check_seconds,
    }
    return WebSocketManager(
        settings.broker_channel,
        settings.broker_url,
        queue_size=settings.ws_outbound_queue_size,
        max_frame_bytes=settings.ws_max_message_bytes,
        batch_max_bytes=settings.ws_batch_max_bytes,
        batch_interval=settings.ws_batch_interval_seconds,
        presence_ttl=settings.ws_presence_ttl_seconds,
        on_presence_change=presence.on_presence_change,
        **({} if settings.broker_url.startswith("memory:") else redis_options),
        recovery=RecoveryOptions(
            max_replay=settings.ws_replay_limit,
            gap_wait=settings.ws_gap_wait_seconds,
            heal_interval=settings.ws_heal_interval_seconds,
        ),
    )


@functools.cache  # once a process
def settle_garbage_collector() -> None:
    """When the process's first app has started: freeze what it loaded (never garbage, so no collection
    walks it again) and collect the youngest objects less often. With thousands of sockets open, full
    collections walked every connection's objects several times a second, 0.1 s each at 2,000 sockets
    (docs/PERFORMANCE.md, "The garbage collector")."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_YOUNGEST_THRESHOLD, *gc.get_threshold()[1:])


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    install_redaction()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Started: the app's stack is built, from every middleware it will have.
        if not isinstance(app.middleware_stack, ConsumerLane):
            app.middleware_stack = ConsumerLane(app, realtime.router.routes)
        engine = create_engine(settings.database_url)
        app.state.engine = engine
        app.state.session_factory = create_session_factory(engine)
        app.state.room_presence = presence = room_presence(settings.ws_presence_tick_seconds)
        app.state.room_reads = RoomReads(app.state.session_factory, settings.ws_handshake_reuse_seconds)
        app.state.message_log = message_log = MessageLog(app.state.session_factory)
        app.state.manager = manager = create_manager(settings, presence)
        app.state.attempts = attempts = AttemptCounter.for_broker(
            settings.broker_url, window=settings.auth_rate_window_seconds, prefix=settings.broker_channel
        )
        app.state.account_watch = account_watch = AccountWatch(
            app.state.session_factory,
            settings.account_check_interval_seconds,
            reuse_for=settings.ws_handshake_reuse_seconds,
        )
        try:
            await create_first_superuser(settings, app.state.session_factory, app.state.password_hasher)
            async with manager:
                watching = asyncio.create_task(account_watch.watch_forever(), name="account-watch")
                settle_garbage_collector()
                try:
                    yield
                finally:
                    watching.cancel()
                    await asyncio.gather(watching, return_exceptions=True)
                    await message_log.aclose(MESSAGE_LOG_CLOSE_SECONDS)
        finally:
            await presence.aclose()
            await attempts.aclose()
            await engine.dispose()

    # /docs with Swagger UI's scripts and styles served by the app, not a CDN: it works offline. No /redoc:
    # ReDoc fetches its logo from its CDN.
    app = FastAPIOffline(
        redoc_url=None,
        title="{{ cookiecutter.project_name }}",
        description="{{ cookiecutter.description }}",
        version=__version__,
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.password_hasher = PasswordHasher.from_settings(settings)
    app.state.room_consumer = RoomConsumer  # what serves /ws/rooms/{room}: a subclass may take its place
    app.add_middleware(
        RequestLimitsMiddleware,
        max_headers=settings.http_max_headers,
        max_header_bytes=settings.http_max_header_bytes,
        max_body_bytes=settings.http_max_body_bytes,
    )
    app.add_middleware(InstanceHeaderMiddleware, instance=settings.instance_name)
    for error_type in DATABASE_UNAVAILABLE:
        app.add_exception_handler(error_type, database_unavailable)
    app.add_exception_handler(RequestValidationError, invalid_request)
    instrument_app(app)
    app.include_router(health.router)
    app.include_router(auth.router)
    app.include_router(users.router)
    app.include_router(rooms.router)
{%- if cookiecutter.use_notifications == "y" %}
    app.include_router(notifications.router)
{%- endif %}
    app.include_router(realtime.router)
    app.include_router(docs.router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html")

    return app
