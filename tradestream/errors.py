"""Every error tradestream raises on purpose, in one short hierarchy (bottom layer: imports
nothing of the project).

    TradestreamError
    ├── ConfigError         a setting that cannot be used (the message names the variable)
    ├── ProtocolError       a client request refused: becomes an `error` message, `code` stable
    │   └── SlotRefused         no upstream slot for the topic (no_slot, demand_limit)
    ├── AuthError           a client token missing or unusable
    │   └── TokenExpired
    ├── BadRequest          a REST parameter that cannot be used (HTTP 400)
    ├── CannotListen        a server socket that cannot be bound (port in use, bad address)
    ├── UpstreamError       something a broker sent or said
    │   ├── FrameError          one frame that cannot be parsed (counted, dropped)
    │   ├── TokenError          an access-token response that cannot be used
    │   ├── PositionsError      a positions answer that cannot be used
    │   └── FeedError           the session cannot go on as it is: reconnect after a backoff
    │       ├── CredentialRejected  the broker refused the credential: get a new one
    │       └── KeyInUse            another session holds the app key: back off
    └── StoreError
        ├── SchemaOutOfDate     the database is not at the code's migration head
        ├── SpoolUnusable       the spool directory cannot be created or written
        └── Fenced              a newer ingest holds the lease: this one may not write

Classes that were `ValueError`s or `RuntimeError`s before keep those bases, so callers that
catch the builtin still do. Library errors are mapped to these at the boundary that meets them.
"""

from __future__ import annotations


class TradestreamError(Exception):
    """The root: anything tradestream raises on purpose."""


class ConfigError(TradestreamError, ValueError):
    """A setting that cannot be used; the message names the variable."""


class ProtocolError(TradestreamError, ValueError):
    """A client message we cannot act on; `code` is stable, the message is for humans."""

    def __init__(self, code: str, message: str, topic: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.topic = topic  # the topic the failed request named, echoed in the error


class SlotRefused(ProtocolError):
    """No upstream registration can be had for a client's topic (`no_slot`, `demand_limit`)."""


class AuthError(TradestreamError):
    """The token is missing or unusable; the message says why (it becomes the close reason)."""


class TokenExpired(AuthError):
    """The token's `exp` has passed (at the handshake, or during the session)."""


class BadRequest(TradestreamError, ValueError):
    """A REST request parameter that cannot be used: answered with HTTP 400."""


class CannotListen(TradestreamError, OSError):
    """A listening socket that cannot be bound: `host`, `port` and the system's reason."""

    def __init__(self, host: str, port: int, reason: str) -> None:
        super().__init__(f"cannot listen on {host}:{port}: {reason}")
        self.host = host
        self.port = port
        self.reason = reason


class UpstreamError(TradestreamError):
    """Something a broker sent or answered."""


class FrameError(UpstreamError, ValueError):
    """A frame that cannot be parsed. `reason` is a short, stable counter label."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


class TokenError(UpstreamError, ValueError):
    """An access-token response without a usable token or lifetime."""


class PositionsError(UpstreamError):
    """A positions answer that cannot be used (the last good one stays)."""


class FeedError(UpstreamError):
    """The session cannot go on as it is; reconnect after a backoff."""


class CredentialRejected(FeedError):
    """The broker refused the credential (approval key, access token): get a new one."""


class KeyInUse(FeedError):
    """Another session holds the app key (KIS OPSP8996): back off, do not hammer."""


class StoreError(TradestreamError):
    """The database cannot be used as it is."""


class SchemaOutOfDate(StoreError, RuntimeError):
    """The database is not at the code's migration head."""


class Fenced(StoreError):
    """A newer holder of the ingest lease exists: a write with this (stale) token is refused."""

    def __init__(self, name: str, token: int) -> None:
        super().__init__(f"lease {name!r}: token {token} is stale (a newer ingest took over)")
        self.name = name
        self.token = token


class SpoolUnusable(StoreError, OSError):
    """The spool directory cannot be created or written: `directory` and the reason."""

    def __init__(self, directory: str, reason: str) -> None:
        super().__init__(f"the spool directory {directory!r} cannot be written: {reason}")
        self.directory = directory
        self.reason = reason
