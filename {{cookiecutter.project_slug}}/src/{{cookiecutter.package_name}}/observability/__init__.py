"""What operators see of the service: Prometheus metrics, structured logs, and request ids.

- `context`: `RequestIdMiddleware` and the `request_id` context variable every log line carries.
- `logs`: `logging_config(settings)`, JSON lines in production and readable text elsewhere, redacted;
  `install_redaction()`, which the app and the gateway call so that any launch redacts.
- `redaction`: `redact(text)`, which takes bearer tokens, JWTs and passwords out of a line.
- `metrics`: `TrafficMetrics` and `MetricsMiddleware` (HTTP and WebSocket traffic), shared with the gateway.
- `handshake`: `HandshakeSend`, how these middlewares act on a WebSocket's handshake and let its frames by.
- `app`: `instrument_app(app)`, with the collectors of the realtime engine and the database pool.

This package imports only `settings` and, in `app`, the engine and SQLAlchemy: the gateway uses the rest.
"""

from .context import RequestIdMiddleware, request_id
from .logs import install_redaction, logging_config
from .metrics import MetricsMiddleware, TrafficMetrics, metrics_endpoint, new_registry
from .redaction import redact

__all__ = [
    "MetricsMiddleware",
    "RequestIdMiddleware",
    "TrafficMetrics",
    "install_redaction",
    "logging_config",
    "metrics_endpoint",
    "new_registry",
    "redact",
    "request_id",
]
