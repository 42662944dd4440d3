"""Log output: the human format, or one JSON object per line for log collectors.

The service's own log lines are written as an event name followed by ``key=value`` fields
(``ws connect client=3 user=alice batch=False``). `JsonFormatter` turns such a line into
``{"ts": ..., "level": "INFO", "logger": "tradestream.gateway", "event": "ws connect",
"client": "3", "user": "alice", "batch": "False", "msg": "..."}``, so connects, disconnects,
subscriptions, auth failures and errors can be filtered by field. Lines that are not in that
shape keep their text in ``msg``.
"""

from __future__ import annotations

import logging
import re
import shlex
import sys
from datetime import UTC, datetime

import msgspec

_FIELD = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)=(.*)", re.S)
_RESERVED = frozenset({"ts", "level", "logger", "event", "msg", "exc"})
HUMAN_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


def fields(message: str) -> tuple[str, dict[str, str]]:
    """``"ws subscribe client=3 topic=price:005930"`` -> ("ws subscribe", {"client": "3", ...}).

    Quoted values (``reason='token expired'``) are unquoted; a line that cannot be split
    (an unbalanced quote) is all event text."""
    try:
        tokens = shlex.split(message, posix=True)
    except ValueError:
        return message, {}
    words: list[str] = []
    out: dict[str, str] = {}
    for token in tokens:
        m = _FIELD.fullmatch(token)
        if m is None or m.group(1) in _RESERVED:
            if out:  # text after the fields: not this shape
                return message, {}
            words.append(token)
        else:
            out[m.group(1)] = m.group(2)
    return " ".join(words), out


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        event, extra = fields(message)
        doc: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "event": event,
            **extra,
            "msg": message,
        }
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return msgspec.json.encode(doc).decode()


def setup(level: str = "INFO", fmt: str = "text") -> None:
    """Configure the root logger: ``fmt`` is "text" (the default) or "json"."""
    if fmt not in ("text", "json"):
        raise ValueError(f"TRADESTREAM_LOG_FORMAT must be text or json, not {fmt!r}")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(HUMAN_FORMAT))
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)
