"""Credentials taken out of text before it is logged.

Clients send their access token in an `Authorization` header, a `token` query parameter or a `bearer, <jwt>`
WebSocket subprotocol, and any of those can reach a log line: uvicorn's access log writes the query string,
an error message may quote a header. `redact()` replaces each credential with `[REDACTED]` and keeps the
rest of the line, so that the line still says what happened. A parameter's name counts as it is decoded,
as the server decodes it: `tok%65n=x` is a `token` too.
"""

from __future__ import annotations

import re
from urllib.parse import unquote

REDACTED = "[REDACTED]"

# Characters of a token in a header or a URL (RFC 6750 b64token, plus percent-encoding).
_CREDENTIAL = r"[A-Za-z0-9\-._~+/%]+=*"

_SENSITIVE_NAME = r"\w*(?:token|password|passwd|secret|secret_key|api_key)"
_QUOTE = r"(?:b?['\"])?"  # Python reprs of headers quote them, bytes included: (b'authorization', b'...')

_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # An Authorization header in any notation: `Authorization: Basic x`, `{'authorization': 'Bearer x'}`,
    # `(b'authorization', b'Bearer x')`; the scheme, if any, goes with the credential.
    (
        re.compile(
            rf"(?i)(\b(?:proxy-)?authorization['\"]?\s*[:=,]\s*\(?{_QUOTE})(?:[A-Za-z]+\s+)?{_CREDENTIAL}"
        ),
        rf"\1{REDACTED}",
    ),
    # The subprotocols a browser offers, as its handshake header gives them (uvicorn logs it at DEBUG): the
    # value after `bearer` is a token, however short.
    (
        re.compile(
            rf"(?i)(\bsec-websocket-protocol['\"]?\s*[:=,]\s*{_QUOTE}"
            r"(?:[^,\s'\"]+\s*,\s*)*?bearer\s*,\s*)[^,\s'\"]+"
        ),
        rf"\1{REDACTED}",
    ),
    # `Bearer x` anywhere else, and the `bearer, x` subprotocol pair of browsers (also as a Python list).
    # Tokens are long: the length keeps prose such as "bearer tokens" readable.
    (
        re.compile(r"(?i)\b(bearer['\"]?(?:\s*,\s*" + _QUOTE + r"|\s+))[A-Za-z0-9\-._~+/%]{16,}=*"),
        rf"\1{REDACTED}",
    ),
    # Secrets in JSON or reprs (`"token": "x"`); those in query strings and forms are `_PARAMETER`'s.
    (re.compile(rf"(?i)(['\"]{_SENSITIVE_NAME}['\"]\s*:\s*{_QUOTE})[^'\"]+"), rf"\1{REDACTED}"),
    # The password of a URL's user info: `redis://:pw@redis:6379`, `postgresql://user:pw@db/app`.
    (re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^:/@\s]*:)[^@\s/]+@"), rf"\1{REDACTED}@"),
    # Anything shaped like a JWT (the base64 of `{"` opens its header), wherever else it appears.
    (re.compile(r"eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*"), REDACTED),
)


# Every pattern above needs one of these (in lower case); most lines have none and skip the patterns.
_TRIGGERS = ("authorization", "bearer", "token", "password", "passwd", "secret", "api_key", "://", "eyj")


# A `name=value` pair of a query string or a form, its name possibly percent-encoded.
_PARAMETER = re.compile(r"(?<![\w%])((?:\w|%[0-9A-Fa-f]{2})+=)([^&\s'\"]+)")
_SENSITIVE = re.compile(rf"(?i){_SENSITIVE_NAME}")


def _redact_parameter(match: re.Match[str]) -> str:
    name = match.group(1)
    return name + REDACTED if _SENSITIVE.fullmatch(unquote(name[:-1])) else match.group(0)


def redact(text: str) -> str:
    """`text` with each bearer token, Authorization value, JWT, URL password and `token=` value replaced."""
    lowered = text.lower()
    if "%" in lowered:
        lowered = unquote(lowered)
    if not any(trigger in lowered for trigger in _TRIGGERS):
        return text
    text = _PARAMETER.sub(_redact_parameter, text)
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text
