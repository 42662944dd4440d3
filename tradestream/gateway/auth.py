"""JWT authentication of gateway clients: HS256 with a shared secret, or RS256 with a public key.

Claims: `sub` (the user id, required), `exp` (checked at the handshake and enforced during the
session), `role` ("user" by default; "admin" may see every account's orders and post signals,
"producer" may post signals) and `accounts` (the broker accounts whose orders and positions
this user may see; seed 003's per-user isolation).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import jwt

from tradestream.errors import AuthError, TokenExpired

MIN_SECRET_BYTES = 32
ROLES = ("user", "producer", "admin")
ACCOUNT_RE = re.compile(r"[A-Za-z0-9-]{1,32}")


@dataclass(frozen=True)
class Identity:
    user_id: str
    role: str = "user"
    expires_at: float | None = None  # epoch seconds
    accounts: frozenset[str] = field(default_factory=frozenset)

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


class Lookup(Protocol):
    """Headers or query arguments: anything with a `get` (quart's `Headers` is no Mapping)."""

    def get(self, key: str) -> str | None: ...


def bearer(headers: Lookup, args: Lookup) -> str | None:
    """The token from ``Authorization: Bearer ...`` or, failing that, ``?token=``."""
    header = headers.get("Authorization") or ""
    if header[:7].lower() == "bearer " and header[7:].strip():
        return header[7:].strip()
    return args.get("token") or None


class Authenticator:
    """Verifies tokens; issues them too when it holds a signing key (HS256, or RS256 with a
    private key)."""

    def __init__(
        self,
        secret: str = "",
        *,
        algorithm: str = "HS256",
        public_key: str = "",
        private_key: str = "",
        leeway_s: float = 5.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """`clock`: epoch seconds, for `exp` and `iat` (tests pass their own)."""
        self.clock = clock
        if algorithm == "HS256":
            if len(secret.encode()) < MIN_SECRET_BYTES:
                # RFC 7518 §3.2: an HS256 key shorter than the hash is guessable.
                raise ValueError(f"the JWT secret must be at least {MIN_SECRET_BYTES} bytes")
            self._verify_key: str = secret
            self._sign_key: str | None = secret
        elif algorithm == "RS256":
            if not public_key:
                raise ValueError("RS256 needs the issuer's public key (PEM)")
            self._verify_key = public_key
            self._sign_key = private_key or None
        else:
            raise ValueError(f"unsupported JWT algorithm {algorithm!r} (HS256 or RS256)")
        self.algorithm = algorithm
        self.leeway_s = leeway_s

    def verify(self, token: str | None) -> Identity:
        if not token:
            raise AuthError("missing token")
        try:
            # exp and iat are checked below against our clock, not the library's
            claims = jwt.decode(
                token,
                self._verify_key,
                algorithms=[self.algorithm],
                options={"require": ["sub"], "verify_exp": False, "verify_iat": False},
            )
        except jwt.InvalidTokenError as exc:
            raise AuthError(f"invalid token: {exc}") from None
        exp = claims.get("exp")
        if exp is not None:
            if not isinstance(exp, int | float) or isinstance(exp, bool):
                raise AuthError("invalid token: exp must be a number")
            if exp + self.leeway_s <= self.clock():
                raise TokenExpired("token expired")
        sub = claims["sub"]
        if not isinstance(sub, str) or not sub:
            raise AuthError("invalid token: sub must be a non-empty string")
        role = claims.get("role", "user")
        if role not in ROLES:
            raise AuthError(f"invalid token: unknown role {role!r}")
        accounts = claims.get("accounts", [])
        if not isinstance(accounts, list) or not all(
            isinstance(a, str) and ACCOUNT_RE.fullmatch(a) for a in accounts
        ):
            # Account names become hub keys: only plain broker account numbers, so no claim
            # can name another account's or the admin's routing key ("*", ":").
            raise AuthError(
                "invalid token: accounts must be a list of account numbers "
                "(letters, digits and '-', at most 32)"
            )
        return Identity(sub, role, float(exp) if exp else None, frozenset(accounts))

    def issue(
        self,
        user_id: str,
        *,
        ttl_s: float = 86400.0,
        role: str = "user",
        accounts: tuple[str, ...] = (),
    ) -> str:
        if self._sign_key is None:
            raise ValueError("this authenticator only verifies (no private key)")
        now = int(self.clock())
        claims: dict[str, object] = {
            "sub": user_id,
            "role": role,
            "iat": now,
            "exp": now + int(ttl_s),
        }
        if accounts:
            claims["accounts"] = list(accounts)
        return jwt.encode(claims, self._sign_key, algorithm=self.algorithm)
