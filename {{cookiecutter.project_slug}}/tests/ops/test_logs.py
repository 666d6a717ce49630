"""Log lines: credentials redacted, the request id attached, JSON in production and text elsewhere."""

from __future__ import annotations

import io
import json
import logging
import secrets
from collections.abc import Iterator

import pytest
import websockets
from httpx import ASGITransport, AsyncClient
from pydantic import SecretStr
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route, WebSocketRoute
from starlette.types import ASGIApp
from starlette.websockets import WebSocket

from {{ cookiecutter.package_name }}.observability import RequestIdMiddleware, logging_config, redact
from {{ cookiecutter.package_name }}.observability.logs import (
    JsonFormatter,
    QuietProbesFilter,
    RedactingFilter,
    RequestContextFilter,
    TextFormatter,
)
from {{ cookiecutter.package_name }}.settings import Settings

from ..processes import serve_in_loop

JWT = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiI0MiIsImV4cCI6MTcwMDAwMDAwMH0"
    ".dGhpc19pc19ub3RfYV9yZWFsX3NpZ25hdHVyZV9hdF9hbGw"
)
OPAQUE = "opaque-credential-0123456789abcdef"


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (f"Authorization: Bearer {JWT}", "Authorization: [REDACTED]"),
        ("authorization: Basic dXNlcjpodW50ZXIy", "authorization: [REDACTED]"),
        ("{'authorization': 'Bearer " + OPAQUE + "'}", "{'authorization': '[REDACTED]'}"),
        (f"[(b'authorization', b'Bearer {OPAQUE}')]", "[(b'authorization', b'[REDACTED]')]"),
        (
            f'"GET /ws/rooms/lobby?since=4&token={OPAQUE} HTTP/1.1" 101',
            '"GET /ws/rooms/lobby?since=4&token=[REDACTED] HTTP/1.1" 101',
        ),
        (f"Sec-WebSocket-Protocol: bearer, {OPAQUE}", "Sec-WebSocket-Protocol: bearer, [REDACTED]"),
        ("< sec-websocket-protocol: bearer, short", "< sec-websocket-protocol: bearer, [REDACTED]"),
        ("< sec-websocket-protocol: chat, bearer, x.y", "< sec-websocket-protocol: chat, bearer, [REDACTED]"),
        (f"subprotocols ['bearer', '{OPAQUE}']", "subprotocols ['bearer', '[REDACTED]']"),
        (
            '{"access_token": "' + OPAQUE + '", "token_type": "bearer"}',
            '{"access_token": "[REDACTED]", "token_type": "bearer"}',
        ),
        ("username=alice&password=hunter2", "username=alice&password=[REDACTED]"),
        (f"GET /ws/notifications?tok%65n={OPAQUE}&x=1", "GET /ws/notifications?tok%65n=[REDACTED]&x=1"),
        ("username=alice&p%61ssw%6Frd=hunter2", "username=alice&p%61ssw%6Frd=[REDACTED]"),
        ("GET /rooms?token_type=bearer&limit=100%25", "GET /rooms?token_type=bearer&limit=100%25"),
        ("redis://:s3cret@redis:6379/0 is down", "redis://:[REDACTED]@redis:6379/0 is down"),
        (f"a stray {JWT} in a message", "a stray [REDACTED] in a message"),
    ],
)
def test_credentials_are_redacted_and_the_rest_of_the_line_kept(line: str, expected: str) -> None:
    assert redact(line) == expected


@pytest.mark.parametrize(
    "line",
    [
        "Authorization header missing",
        "clients send bearer tokens in a header",
        '{"token_type": "bearer"}',
        '{"token_type": "bearer", "expires_in": 3600}',
        '"GET /rooms/lobby/messages?after=3&limit=50 HTTP/1.1" 200',
        "http://app1:8000 is healthy",
    ],
)
def test_ordinary_lines_are_left_alone(line: str) -> None:
    assert redact(line) == line


@pytest.fixture
def captured() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    """A logger writing JSON lines through the filters of the service into a buffer."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter(instance="app1"))
    handler.addFilter(RedactingFilter())
    handler.addFilter(RequestContextFilter())
    logger = logging.getLogger(f"ops-test-{secrets.token_hex(4)}")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    yield logger, stream
    logger.removeHandler(handler)


def test_a_token_is_redacted_from_arguments_tracebacks_and_extra_fields(
    captured: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = captured
    logger.info("request headers: %s", {"authorization": f"Bearer {OPAQUE}"})
    try:
        raise ValueError(f"could not decode {JWT}")
    except ValueError:
        logger.exception("handshake failed", extra={"subprotocols": f"bearer, {OPAQUE}"})
    output = stream.getvalue()
    assert OPAQUE not in output
    assert JWT not in output
    first, second = (json.loads(line) for line in output.splitlines())
    assert first["message"] == "request headers: {'authorization': '[REDACTED]'}"
    assert (first["level"], first["instance"], first["request_id"]) == ("INFO", "app1", None)
    assert second["exception"].endswith("ValueError: could not decode [REDACTED]")
    assert second["subprotocols"] == "bearer, [REDACTED]"
    assert first["time"].endswith("Z")


def _app_logging_from(logger: logging.Logger) -> ASGIApp:
    async def page(_request: Request) -> PlainTextResponse:
        logger.info("serving a page")
        return PlainTextResponse("ok")

    async def socket(websocket: WebSocket) -> None:
        await websocket.accept()
        logger.info("serving a socket")
        await websocket.send_text("ok")
        await websocket.close()

    return Starlette(
        routes=[Route("/page", page), WebSocketRoute("/socket", socket)],
        middleware=[Middleware(RequestIdMiddleware)],
    )


async def test_each_request_has_an_id_in_its_log_lines_and_its_response(
    captured: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = captured
    app = _app_logging_from(logger)
    async with AsyncClient(transport=ASGITransport(app=app), base_url="http://test") as client:
        given = await client.get("/page", headers={"X-Request-ID": "trace-4bf92f3577b34da6"})
        forged = await client.get("/page", headers={"X-Request-ID": 'x" level="CRITICAL'})
        made_up = await client.get("/page")
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert given.headers["x-request-id"] == lines[0]["request_id"] == "trace-4bf92f3577b34da6"
    assert forged.headers["x-request-id"] == lines[1]["request_id"] != 'x" level="CRITICAL'
    assert made_up.headers["x-request-id"] == lines[2]["request_id"]
    assert len({line["request_id"] for line in lines}) == 3


async def test_a_websocket_connection_has_an_id_in_its_log_lines_and_its_handshake(
    captured: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = captured
    async with serve_in_loop(_app_logging_from(logger)) as base_url:
        url = base_url.replace("http://", "ws://", 1) + "/socket"
        async with websockets.connect(url, additional_headers={"X-Request-ID": "conn-7"}) as websocket:
            assert await websocket.recv() == "ok"
            assert websocket.response is not None
            assert websocket.response.headers["X-Request-ID"] == "conn-7"
    [line] = (json.loads(line) for line in stream.getvalue().splitlines())
    assert (line["message"], line["request_id"]) == ("serving a socket", "conn-7")


def _settings(**overrides: str) -> Settings:
    return Settings(_env_file=None, secret_key=SecretStr(secrets.token_urlsafe(32)), **overrides)


@pytest.mark.parametrize(
    ("overrides", "formatter"),
    [
        ({"environment": "production"}, JsonFormatter),
        ({"environment": "development"}, TextFormatter),
        ({"environment": "test"}, TextFormatter),
        ({"environment": "development", "log_format": "json"}, JsonFormatter),
        ({"environment": "production", "log_format": "text"}, TextFormatter),
    ],
)
def test_the_format_follows_the_environment_unless_set(
    overrides: dict[str, str], formatter: type[logging.Formatter]
) -> None:
    config = logging_config(_settings(**overrides, log_level="WARNING"))
    assert config["formatters"]["default"]["()"] is formatter
    assert config["root"]["level"] == "WARNING"
    assert all(logger["level"] == "WARNING" for logger in config["loggers"].values())


def access_record(path: str) -> logging.LogRecord:
    """A record as uvicorn's access log makes it."""
    arguments = ("127.0.0.1:50000", "GET", path, "1.1", 200)
    return logging.LogRecord(
        "uvicorn.access", logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d', arguments, None
    )


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/gateway/healthz", "/gateway/readyz?x=1"])
def test_health_probes_are_logged_at_debug_only(path: str) -> None:
    assert not QuietProbesFilter("INFO").filter(access_record(path))
    record = access_record(path)
    assert QuietProbesFilter("DEBUG").filter(record)
    assert record.levelname == "DEBUG"


@pytest.mark.parametrize("path", ["/rooms", "/users/me", "/healthz/more", "/"])
def test_other_requests_are_logged_at_info(path: str) -> None:
    record = access_record(path)
    assert QuietProbesFilter("INFO").filter(record)
    assert record.levelname == "INFO"


def test_the_access_log_goes_through_the_probe_filter() -> None:
    config = logging_config(_settings(log_level="INFO"))
    assert config["loggers"]["uvicorn.access"]["filters"] == ["probes"]
    assert config["filters"]["probes"] == {"()": QuietProbesFilter, "level": "INFO"}


def test_development_lines_are_readable_text() -> None:
    record = logging.LogRecord("chat", logging.WARNING, __file__, 1, "room %s is full", ("lobby",), None)
    record.request_id = "3f2a9c1e5d6b4a7c"
    line = TextFormatter().format(record)
    assert line.endswith("WARNING chat [3f2a9c1e] room lobby is full")
