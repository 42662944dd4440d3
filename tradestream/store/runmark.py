"""The run mark: a file beside the spool saying a run is in progress and when it was last
alive. A clean stop removes it; finding it at start means the previous run ended without
draining (killed, crashed, the machine went down), and the feeds then report the downtime as
a feed gap, as they do for a lost connection. Synchronous: call it from a worker thread."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

MARK_FILE = "running"
BEAT_S = 1.0  # how often a running service rewrites the mark (the gap's precision)


class RunMark:
    def __init__(self, directory: Path) -> None:
        self.path = directory / MARK_FILE

    def previous(self) -> datetime | None:
        """When the previous run was last alive, if it did not stop cleanly; else None."""
        try:
            text = self.path.read_text().strip()
        except FileNotFoundError:
            return None
        try:
            return datetime.fromisoformat(text).astimezone(UTC)
        except ValueError:  # torn or foreign content: the file's own time will do
            return datetime.fromtimestamp(self.path.stat().st_mtime, UTC)

    def beat(self) -> None:
        """Mark this run alive now (written aside and renamed: never a torn mark)."""
        tmp = self.path.with_name(f".{MARK_FILE}-{os.getpid()}.tmp")
        tmp.write_text(datetime.now(UTC).isoformat())
        tmp.rename(self.path)

    def clear(self) -> None:
        """A clean stop: nothing to report at the next start."""
        self.path.unlink(missing_ok=True)
