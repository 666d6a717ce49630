"""Signed access tokens (JWT, HS256) carrying the user id in `sub`, with `iat` and `exp`, and `key`.

`key` is the user's token key when the token was issued: replacing it (logout, password change, account
disabled) revokes every token issued before, and a new user who gets the id of a deleted one has another key,
so the old user's tokens never sign them in.
"""

from __future__ import annotations

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
