"""Signed access tokens (JWT, HS256) carrying the user id in `sub`, with `iat` and `exp`."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

from jose import JWTError, jwt

ALGORITHM = "HS256"
# Decoding accepts this list only: a token whose header names another algorithm, `none` included, is refused.
ALLOWED_ALGORITHMS = [ALGORITHM]
REQUIRED_CLAIMS = {"require_sub": True, "require_iat": True, "require_exp": True}
# The clocks of the instances that issue and check tokens may differ by this much.
CLOCK_SKEW_SECONDS = 60


class InvalidTokenError(Exception):
    """The token is malformed, signed with another key or algorithm, expired, or lacks a claim."""


def create_access_token(*, subject: str, secret_key: str, expires_in: timedelta) -> str:
    issued_at = datetime.now(UTC)
    claims = {"sub": subject, "iat": issued_at, "exp": issued_at + expires_in}
    return jwt.encode(claims, secret_key, algorithm=ALGORITHM)


def decode_access_token(token: str, *, secret_key: str) -> str:
    """The token's subject, once its signature, algorithm and lifetime have been checked."""
    try:
        claims = jwt.decode(token, secret_key, algorithms=ALLOWED_ALGORITHMS, options=REQUIRED_CLAIMS)
    except JWTError as error:
        raise InvalidTokenError(str(error)) from error
    # python-jose checks that `iat` converts to a number, not when it is: a token from the future is refused.
    issued_at = claims["iat"]
    if not isinstance(issued_at, int | float) or issued_at > time.time() + CLOCK_SKEW_SECONDS:
        raise InvalidTokenError("The token's issue time (iat) is not a time in the past")
    return str(claims["sub"])
