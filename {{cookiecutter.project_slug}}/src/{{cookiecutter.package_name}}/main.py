"""The application factory: `create_app()` wires settings, database, realtime engine and routers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from . import __version__
from .db.session import create_engine, create_session_factory
from .db.users import ensure_superuser
from .middleware import InstanceHeaderMiddleware
from .routers import auth, health, rooms, users
from .schemas import UserCreate
from .security.passwords import PasswordHasher
from .settings import Settings, get_settings


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
        await ensure_superuser(session, user_create=user_create, hasher=hasher)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = create_engine(settings.database_url)
        app.state.engine = engine
        app.state.session_factory = create_session_factory(engine)
        try:
            await create_first_superuser(settings, app.state.session_factory, app.state.password_hasher)
            yield
        finally:
            await engine.dispose()

    app = FastAPI(
        title="{{ cookiecutter.project_name }}",
        description="{{ cookiecutter.description }}",
        version=__version__,
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.password_hasher = PasswordHasher.from_settings(settings)
    app.add_middleware(InstanceHeaderMiddleware, instance=settings.instance_name)
    app.include_router(health.router)
    app.include_router(auth.router)
    app.include_router(users.router)
    app.include_router(rooms.router)
    return app
