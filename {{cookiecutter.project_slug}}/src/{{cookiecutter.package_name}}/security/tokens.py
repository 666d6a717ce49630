"""Signed access tokens (JWT, HS256) carrying the user id in `sub`, with `iat` and `exp`, and `key`.

`key` is the user's token key when the token was issued: replacing it (logout, password change, account
disabled) revokes every token issued before, and a new user who gets the id of a deleted one has another key,
so the old user's tokens never sign them in.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from jose import JWTError, jwt

ALGORITHM = "HS256"
# Decoding accepts this list only: a token whose header names another algorithm, `none` included, is refused.
ALLOWED_ALGORITHMS = [ALGORITHM]
REQUIRED_CLAIMS = {"require_sub": True, "require_iat": True, "require_exp": True}
# The clocks of the instances that issue and check tokens may differ by this much.
CLOCK_SKEW_SECONDS = 60
# Tokens found valid, kept with their claims: a client presents its token again at each request, reconnect
# and tab, and checking it with python-jose costs about a tenth of a WebSocket handshake's CPU (as Envoy's
# JWT filter keeps verified tokens). Only tokens the service signed can be kept; about 1 KB each.
CHECKED_TOKENS_KEPT = 4096


class InvalidTokenError(Exception):
    """The token is malformed, signed with another key or algorithm, expired, or lacks a claim."""


@dataclass(frozen=True)
class AccessClaims:
    """What a valid token says: whose it is, with which token key, and until when (Unix time)."""

    subject: str
    key: str | None
    expires_at: float


def create_access_token(
    *, subject: str, secret_key: str, expires_in: timedelta, token_key: str | None = None
) -> str:
    issued_at = datetime.now(UTC)
    claims: dict[str, object] = {"sub": subject, "iat": issued_at, "exp": issued_at + expires_in}
    if token_key is not None:
        claims["key"] = token_key
    return jwt.encode(claims, secret_key, algorithm=ALGORITHM)


def decode_access_token(token: str, *, secret_key: str) -> AccessClaims:
    """The token's claims, once its signature, algorithm and lifetime have been checked."""
    claims = _checked_claims(token, secret_key)
    if claims.expires_at < time.time():  # checked at every use: the claims of a valid token are kept
        raise InvalidTokenError("Signature has expired.")
    return claims


@functools.lru_cache(maxsize=CHECKED_TOKENS_KEPT)
def _checked_claims(token: str, secret_key: str) -> AccessClaims:
    """What `decode_access_token` checks, but for a lifetime that ended since; kept for the tokens that pass
    (a token refused raises, and is checked again if it comes back)."""
    try:
        claims = jwt.decode(token, secret_key, algorithms=ALLOWED_ALGORITHMS, options=REQUIRED_CLAIMS)
    except JWTError as error:
        raise InvalidTokenError(str(error)) from error
    # python-jose checks that `iat` converts to a number, not when it is: a token from the future is refused.
    issued_at = claims["iat"]
    if not isinstance(issued_at, int | float) or issued_at > time.time() + CLOCK_SKEW_SECONDS:
        raise InvalidTokenError("The token's issue time (iat) is not a time in the past")
    key = claims.get("key")
    return AccessClaims(str(claims["sub"]), key if isinstance(key, str) else None, float(claims["exp"]))
