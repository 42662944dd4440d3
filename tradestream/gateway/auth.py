"""JWT authentication of gateway clients (HS256 with a shared secret)."""

from __future__ import annotations

import time
from dataclasses import dataclass

import jwt

CLOSE_UNAUTHORIZED = 4401
MIN_SECRET_BYTES = 32


class AuthError(Exception):
    """The token is missing or unusable; the message says why (it becomes the close reason)."""


@dataclass(frozen=True)
class Identity:
    user_id: str
    role: str
    expires_at: float | None


class Authenticator:
    def __init__(self, secret: str, *, algorithm: str = "HS256", leeway_s: float = 5.0) -> None:
        if len(secret.encode()) < MIN_SECRET_BYTES:
            # RFC 7518 §3.2: an HS256 key shorter than the hash is guessable.
            raise ValueError(f"the JWT secret must be at least {MIN_SECRET_BYTES} bytes")
        self._secret = secret
        self._algorithm = algorithm
        self._leeway = leeway_s

    def verify(self, token: str | None) -> Identity:
        if not token:
            raise AuthError("missing token")
        try:
            claims = jwt.decode(token, self._secret, algorithms=[self._algorithm],
                                leeway=self._leeway, options={"require": ["sub"]})
        except jwt.ExpiredSignatureError:
            raise AuthError("token expired") from None
        except jwt.InvalidTokenError as exc:
            raise AuthError(f"invalid token: {exc}") from None
        sub = claims["sub"]
        if not isinstance(sub, str) or not sub:
            raise AuthError("invalid token: sub must be a non-empty string")
        exp = claims.get("exp")
        return Identity(sub, str(claims.get("role", "user")), float(exp) if exp else None)

    def issue(self, user_id: str, *, ttl_s: float = 86400.0, role: str = "user") -> str:
        now = int(time.time())
        return jwt.encode({"sub": user_id, "role": role, "iat": now, "exp": now + int(ttl_s)},
                          self._secret, algorithm=self._algorithm)
