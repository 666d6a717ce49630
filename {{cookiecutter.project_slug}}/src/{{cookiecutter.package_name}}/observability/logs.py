"""Logging of the app and the gateway: one JSON object a line in production, readable lines elsewhere.

Every record, uvicorn's included, goes through one handler on the root logger, whose filters add the id of
the request or connection being served (`request_id`, None outside one) and redact credentials. The
configuration is a `logging.config.dictConfig` dictionary, which uvicorn applies in each worker process::

    uvicorn.run(app, log_config=logging_config(settings))

A JSON line holds `time` (UTC, ISO 8601), `level`, `logger`, `message`, `request_id`, `instance`, and
`exception` when there is one; fields given as `logger.info(..., extra={"room_count": 3})` are added too.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

from ..settings import Settings
from .context import request_id
from .redaction import redact

# The attributes every LogRecord has; any other attribute came from `extra=` and is written out, except
# uvicorn's `color_message` (the message again, with terminal colours).
_RECORD_ATTRIBUTES = frozenset(
    logging.LogRecord("", logging.INFO, "", 0, "", None, None).__dict__.keys()
    | {"message", "asctime", "color_message"}
)
UVICORN_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access", "uvicorn.asgi")
# Asked every few seconds by orchestrators and the gateway: at INFO they would drown the requests of people.
PROBE_PATHS = frozenset({"/healthz", "/readyz", "/gateway/healthz", "/gateway/readyz"})


def _extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    return {key: value for key, value in record.__dict__.items() if key not in _RECORD_ATTRIBUTES}


class RequestContextFilter(logging.Filter):
    """Add `request_id`: the request or connection being served when the record was made."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id.get()
        return True


class QuietProbesFilter(logging.Filter):
    """Log uvicorn's access lines for health probes at DEBUG: kept when `level` is DEBUG, else dropped."""

    def __init__(self, level: int | str = logging.INFO) -> None:
        super().__init__()
        self.level = logging.getLevelName(level) if isinstance(level, str) else level

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if not isinstance(args, tuple) or len(args) < 3 or str(args[2]).split("?")[0] not in PROBE_PATHS:
            return True
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return bool(self.level <= logging.DEBUG)


class RedactingFilter(logging.Filter):
    """Take credentials out of the message, its arguments, the traceback and `extra` fields of each record.

    The message is formatted here and its arguments dropped, because a token can hide in either; uvicorn's
    access log, for one, passes the query string as an argument.
    """

    _formatter = logging.Formatter()

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact(record.getMessage())
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = self._formatter.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        for key, value in _extra_fields(record).items():
            if isinstance(value, str):
                setattr(record, key, redact(value))
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object a line, for log collectors."""

    def __init__(self, instance: str | None = None) -> None:
        super().__init__()
        self.instance = instance

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", None),
            "instance": self.instance,
        }
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = record.stack_info
        entry.update((key, value) for key, value in _extra_fields(record).items() if key not in entry)
        return json.dumps(entry, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """`12:00:01.234 INFO    chat.consumers [3f2a9c1e] message`, for people reading a terminal."""

    def __init__(self) -> None:
        super().__init__(
            "%(asctime)s.%(msecs)03d %(levelname)-7s %(name)s [%(short_id)s] %(message)s", "%H:%M:%S"
        )

    def format(self, record: logging.LogRecord) -> str:
        current = getattr(record, "request_id", None)
        record.short_id = current[:8] if current else "-"
        return super().format(record)


def install_redaction() -> None:
    """Redact what the handlers configured so far write, however the process was launched.

    The `serve` command configures logging with `logging_config`; a plain `uvicorn --factory` gives its own
    loggers handlers of their own and leaves the others to Python's last resort, which get the filter here.
    """
    handlers = {*logging.getLogger().handlers, logging.lastResort}
    for name in UVICORN_LOGGERS:
        handlers.update(logging.getLogger(name).handlers)
    for handler in handlers:
        if handler is not None and not any(isinstance(each, RedactingFilter) for each in handler.filters):
            handler.addFilter(RedactingFilter())


def logging_config(settings: Settings) -> dict[str, Any]:
    """The `dictConfig` of a process: one root handler, formatted as configured, taking uvicorn's records."""
    use_json = settings.log_format == "json" if settings.log_format else settings.environment == "production"
    formatter: dict[str, Any] = (
        {"()": JsonFormatter, "instance": settings.instance_name} if use_json else {"()": TextFormatter}
    )
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {
            "context": {"()": RequestContextFilter},
            "redact": {"()": RedactingFilter},
            "probes": {"()": QuietProbesFilter, "level": settings.log_level},
        },
        "formatters": {"default": formatter},
        "handlers": {
            "default": {
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stderr",
                "formatter": "default",
                "filters": ["redact", "context"],
            }
        },
        "root": {"level": settings.log_level, "handlers": ["default"]},
        # uvicorn's own handlers would bypass the filters: its records go up to the root handler instead.
        "loggers": {
            name: {"level": settings.log_level, "handlers": [], "propagate": True}
            | ({"filters": ["probes"]} if name == "uvicorn.access" else {})
            for name in UVICORN_LOGGERS
        },
    }
