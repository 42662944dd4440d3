"""An on-disk spool of event batches for when the database cannot take them.

A directory of segment files, one batch each, named ``<sequence>-<rows>.spool`` and holding the
batch as msgpack (events are tagged msgspec Structs). A segment is written to a temporary name,
fsynced and renamed, so a crash leaves either a whole segment or none. Segments are replayed
oldest first and removed only after their rows are committed; replaying one twice is harmless
because inserts are idempotent. Synchronous: call it from a worker thread.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import msgspec

from tradestream.errors import SpoolUnusable
from tradestream.events import Event

log = logging.getLogger(__name__)

FIRST_SEQUENCE = 10**9
_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(list[Event])


class Spool:
    def __init__(self, directory: Path) -> None:
        """Open (or create) the spool at `directory`; SpoolUnusable if it cannot be created or
        written, found now rather than during the first outage, when it would be too late."""
        self.directory = directory
        try:
            directory.mkdir(parents=True, exist_ok=True)
            probe = directory / f".probe-{os.getpid()}.tmp"
            with open(probe, "wb") as fh:
                fh.write(b"x")
                os.fsync(fh.fileno())
            probe.unlink()
        except OSError as exc:
            raise SpoolUnusable(str(directory), exc.strerror or str(exc)) from None
        for stale in directory.glob("*.tmp"):  # a crash during a write: never renamed
            stale.unlink()
        self._segments = sorted(directory.glob("*.spool"))
        # Sequences start high so that a batch older than the spool can go before it.
        self._seq = max((self._sequence(p) for p in self._segments), default=FIRST_SEQUENCE)
        self.rows = sum(self._rows(p) for p in self._segments)
        self.bad = 0

    @staticmethod
    def _sequence(path: Path) -> int:
        return int(path.stem.split("-")[0])

    @staticmethod
    def _rows(path: Path) -> int:
        return int(path.stem.split("-")[1])

    @property
    def segments(self) -> int:
        return len(self._segments)

    def append(self, batch: Sequence[Event], *, front: bool = False) -> None:
        """Persist a batch durably (fsync) as the newest segment, or the oldest (`front`)."""
        if front and self._segments:
            seq = self._sequence(self._segments[0]) - 1
        else:
            seq = self._seq = self._seq + 1
        final = self.directory / f"{seq:012d}-{len(batch)}.spool"
        tmp = final.with_suffix(".tmp")
        with open(tmp, "wb") as fh:
            fh.write(_encoder.encode(list(batch)))
            fh.flush()
            os.fsync(fh.fileno())
        tmp.rename(final)
        dir_fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)  # make the rename itself durable
        finally:
            os.close(dir_fd)
        if front:
            self._segments.insert(0, final)
        else:
            self._segments.append(final)
        self.rows += len(batch)

    def oldest(self) -> tuple[Path, list[Event]] | None:
        """The oldest readable segment and its events; unreadable ones are set aside."""
        while self._segments:
            path = self._segments[0]
            try:
                return path, _decoder.decode(path.read_bytes())
            except (OSError, msgspec.DecodeError) as exc:
                log.error("spool segment %s is unreadable (%s); moved aside as .bad", path, exc)
                self._segments.pop(0)
                self.rows -= self._rows(path)
                self.bad += 1
                path.rename(path.with_suffix(".bad"))
        return None

    def set_aside(self, events: Sequence[Event], reason: str) -> None:
        """Keep rows the database refused (not an outage) in ``dead-letters.log``, one line
        each with the reason, for an operator to look at; they are not retried."""
        with open(self.directory / "dead-letters.log", "a", encoding="utf-8") as fh:
            for ev in events:
                fh.write(f"{reason[:300]}\t{ev!r}\n")
            fh.flush()
            os.fsync(fh.fileno())

    def remove(self, path: Path) -> None:
        """Forget a segment whose rows are committed."""
        self._segments.remove(path)
        self.rows -= self._rows(path)
        path.unlink()
