"""Service configuration, read from the environment and `.env`.

Backends are chosen at run time by URL: the defaults run everything in one process (SQLite file and the
`memory://` broker); the deployed stack sets `DATABASE_URL=postgresql+asyncpg://...` and
`BROKER_URL=redis://...`.
"""

from __future__ import annotations

import socket
from functools import lru_cache
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_SECRET = "change-me"  # noqa: S105 - the placeholder that production refuses
MIN_SECRET_LENGTH = 32


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    environment: Literal["development", "test", "production"] = "development"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["json", "text"] | None = Field(
        default=None, description="JSON lines or readable text; by default JSON in production, else text."
    )
    shutdown_grace_seconds: int = Field(
        default=8,
        gt=0,
        description="On SIGTERM, how long requests in flight get to finish; keep it below the orchestrator's "
        "stop timeout (10 s for Docker).",
    )
    instance_name: str = Field(default_factory=socket.gethostname)

    secret_key: SecretStr = SecretStr(DEFAULT_SECRET)
    access_token_expire_minutes: int = Field(default=60, gt=0)
    argon2_time_cost: int = Field(default=3, ge=1, description="Argon2 passes; lower only to speed up tests.")
    argon2_memory_cost: int = Field(
        default=64 * 1024, ge=32, description="Argon2 memory in KiB; lower only to speed up tests."
    )

    account_check_interval_seconds: float = Field(
        default=30.0,
        gt=0,
        description="How often the accounts behind open WebSockets are checked: a disabled one, or an "
        "expired token, is closed with 1008 within this time even if no instance was told.",
    )
    ws_handshake_reuse_seconds: float = Field(
        default=5.0,
        ge=0,
        description="What a WebSocket handshake reads from the database is reused for this long: the account "
        "of a socket open on the instance with the same token key, and a public room's record; those asked "
        "for at once are read once. 0 reads them for every socket. A revocation the instance is told of "
        "(logout, password change, disable-user) stops the reuse of that account at once.",
    )
    password_hash_concurrency: int = Field(
        default=2,
        gt=0,
        description="Hashes computed at once in a process; others wait (each takes ARGON2_MEMORY_COST).",
    )
    auth_rate_window_seconds: float = Field(
        default=60.0, gt=0, description="The window in which login and registration attempts are counted."
    )
    auth_attempts_per_address: int = Field(
        default=20, gt=0, description="Logins and registrations from one client address a window; more: 429."
    )
    auth_attempts_per_username: int = Field(
        default=10, gt=0, description="Logins and registrations for one username a window; more: 429."
    )

    database_url: str = "sqlite+aiosqlite:///./{{ cookiecutter.package_name }}.db"
    database_password: SecretStr | None = Field(
        default=None,
        description="Put in DATABASE_URL in place of its password, quoted, so that any character works.",
    )
    broker_url: str = "memory://"
    broker_channel: str = Field(
        default="{{ cookiecutter.project_slug }}",
        description="Prefix of every broker channel and key, so that services can share one Redis.",
    )
    broker_command_timeout_seconds: float = Field(
        default=3.0,
        gt=0,
        description="Longest wait for any Redis command, and for the answer to the listener's health-check "
        "PING: a Redis that stops answering is reported unavailable (and /readyz answers 503) this soon.",
    )
    broker_health_check_seconds: float = Field(
        default=1.0, gt=0, description="How long the Redis listener may sit idle before it sends a PING."
    )

    first_superuser: str | None = None
    first_superuser_password: SecretStr | None = None

    http_max_body_bytes: int = Field(
        default=1024 * 1024, gt=0, description="Largest HTTP request body; a larger one is answered 413."
    )
    http_max_headers: int = Field(default=100, gt=0, description="More request headers are answered 431.")
    http_max_header_bytes: int = Field(
        default=32 * 1024, gt=0, description="Largest request head (line and headers); a larger one: 431."
    )
    http_header_timeout_seconds: float = Field(
        default=10.0,
        gt=0,
        description="A connection whose request head has not all arrived this long after it opened (or "
        "after the previous response) is closed: slow clients cannot hold sockets open (slowloris).",
    )
    ws_max_message_bytes: int = Field(
        default=64 * 1024,
        gt=0,
        description="Largest WebSocket frame, after decompression; the server stops reading a larger one "
        "and closes with 1009.",
    )
    ws_compression: Literal["off", "deflate"] = Field(
        default="off",
        description="permessage-deflate for WebSockets (what browsers offer): `off` declines it, `deflate` "
        "compresses each frame again for every connection it goes to, at about half as much CPU again per "
        "delivery (docs/PERFORMANCE.md).",
    )
    ws_outbound_queue_size: int = Field(default=256, gt=0)
    ws_batch_interval_seconds: float = Field(
        default=0.02,
        ge=0,
        le=1,
        description="For clients that ask for batches (`?batch=1`): the least time from the end of a round "
        "of writes to the next; the events that come meanwhile go out together, one frame a connection.",
    )
    ws_batch_max_bytes: int = Field(
        default=64 * 1024, gt=0, description="Largest frame of several events, for clients that ask for them."
    )
    ws_rate_limit_per_second: float = Field(default=10.0, gt=0)
    ws_rate_limit_burst: int = Field(default=20, gt=0)
    ws_max_connections_per_user: int = Field(
        default=20,
        gt=0,
        description="WebSockets one user may have open at once, on every endpoint and instance together; "
        "one more is closed with 1008.",
    )
    ws_presence_ttl_seconds: float = Field(
        default=30.0,
        gt=0,
        description="Seconds after which the users of an instance that died leave its rooms' presence.",
    )
    ws_presence_tick_seconds: float = Field(
        default=0.05,
        gt=0,
        le=5,
        description="Seconds during which a room's joins and leaves are gathered into one announcement.",
    )
    ws_replay_limit: int = Field(
        default=1000,
        gt=0,
        description="Most chat messages replayed to a connection at once; beyond, it gets history.truncated.",
    )
    ws_gap_wait_seconds: float = Field(
        default=0.2, ge=0, description="Seconds a gap in a room's seqs may stay open before it is read."
    )
    ws_heal_interval_seconds: float = Field(
        default=1.0, gt=0, description="Seconds between checks that every connection has its room's latest."
    )
{%- if cookiecutter.use_notifications == "y" %}
    ws_max_subscriptions_per_connection: int = Field(
        default=50, gt=0, description="Topic filters one notifications socket may hold; more: limit_exceeded."
    )
    ws_max_subscriptions_per_user: int = Field(
        default=200,
        gt=0,
        description="Topic filters the sockets of one user may hold together on one instance; one more: "
        "limit_exceeded.",
    )
    ws_max_wildcard_subscriptions_per_connection: int = Field(
        default=5,
        ge=0,
        description="Filters with + or # one socket may hold: each distinct one is a Redis pattern that "
        "every PUBLISH is checked against.",
    )
    ws_max_topic_filter_bytes: int = Field(
        default=256, gt=0, description="Longest topic filter or topic name a client may send, in UTF-8 bytes."
    )
    notifications_client_publish: bool = Field(
        default=False, description="Let clients publish to topics over /ws/notifications."
    )
{%- endif %}
{%- if cookiecutter.use_gateway == "y" %}
    gateway_upstreams: str = Field(
        default="http://127.0.0.1:8001",
        description="Comma-separated base URLs of the app instances behind the gateway.",
    )
    gateway_health_path: str = Field(
        default="/healthz", description="Polled on each upstream; anything but 200 takes it out of rotation."
    )
    gateway_health_interval_seconds: float = Field(
        default=2.0,
        gt=0,
        description="How often the gateway as a whole polls each upstream: each of its workers polls "
        "every interval x workers seconds, at staggered times.",
    )
    gateway_workers: int = Field(
        default=1, ge=1, description="Set by `gateway --workers N` for its workers; not to be set by hand."
    )
    gateway_health_timeout_seconds: float = Field(default=1.0, gt=0)
    gateway_connect_timeout_seconds: float = Field(default=5.0, gt=0)
    gateway_upstream_timeout_seconds: float = Field(
        default=60.0, gt=0, description="Longest wait for an upstream's response or its next chunk, then 504."
    )
{%- endif %}

    @model_validator(mode="after")
    def _put_the_database_password_in_the_url(self) -> Settings:
        if self.database_password is not None:
            from sqlalchemy.engine import make_url  # only here: the gateway never loads SQLAlchemy

            url = make_url(self.database_url).set(password=self.database_password.get_secret_value())
            self.database_url = url.render_as_string(hide_password=False)
        return self

    @model_validator(mode="after")
    def _refuse_weak_secret_outside_development(self) -> Settings:
        if self.environment == "development":
            return self
        secret = self.secret_key.get_secret_value()
        if secret == DEFAULT_SECRET or len(secret) < MIN_SECRET_LENGTH:
            raise ValueError(
                f"SECRET_KEY must be set to a random value of at least {MIN_SECRET_LENGTH} characters "
                f"when ENVIRONMENT={self.environment}; generate one with "
                '`python -c "import secrets; print(secrets.token_urlsafe(48))"`'
            )
        return self


@lru_cache
def get_settings() -> Settings:
    return Settings()
