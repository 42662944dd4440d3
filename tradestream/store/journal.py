"""The intake journal: every event the service takes in is appended here before it moves on,
so a process that dies without draining (kill -9, the OOM killer, a crash) loses none of what
it had read.

The feeds append each received frame's events as one record (one `os.write`, no buffering in
the process: once the call returns, the bytes are the kernel's and outlive the process); the
router and the side edge append what they derive (alerts, signals, slot audits). The flusher
reports each batch once it is durable (committed, spooled, or set aside), and a segment whose
events are all durable is deleted. Segments are rotated every `rotate_s`, so in steady state
the journal holds a few seconds of intake.

At the next start, `take_leftovers` reads what an unclean stop left and hands it to the spool,
which the flusher replays first; inserts are idempotent, so events that had been stored are
not stored twice. The journal is not fsynced: it protects against the process dying, not the
machine (the spool, fsynced, covers what the flusher has taken). A journal that cannot be
written (a full disk) is logged and counted, and intake goes on without it.

Records: a 4-byte little-endian length, then the events as msgpack (tagged msgspec Structs).
A record torn by a kill in the middle of a write is the segment's end and is skipped.
"""

from __future__ import annotations

import logging
import os
import struct
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import msgspec

from tradestream.events import Event

log = logging.getLogger(__name__)

ROTATE_S = 5.0  # a new segment this often: how long a settled segment may wait to be deleted
SUFFIX = ".journal"
_HEADER = struct.Struct("<I")
_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(list[Event])


class Journal:
    """Synchronous and cheap: called on the Trio thread for every received frame."""

    def __init__(
        self,
        directory: Path,
        *,
        rotate_s: float = ROTATE_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self._rotate_s = rotate_s
        self._clock = clock
        self._leftovers = sorted(directory.glob(f"*{SUFFIX}"))
        self._next = max((int(p.stem) for p in self._leftovers), default=0) + 1
        self._seg = 0  # current segment number (0: none open)
        self._fd = -1
        self._opened_at = 0.0
        self._of: dict[int, int] = {}  # id(event) -> its segment, until durable
        self._open: dict[int, int] = {}  # segment -> events in it not yet durable
        self._buf = bytearray()
        self.stats = {"records": 0, "events": 0, "bytes": 0, "segments_deleted": 0, "errors": 0}
        self.error = ""  # the last write error, while writes fail ("" once they work)

    # -- the previous run's ------------------------------------------------------------------
    def take_leftovers(self, keep: Callable[[list[Event]], None]) -> int:
        """Hand the events an unclean stop left behind to `keep` (the spool), then delete
        those segments; returns how many events. Call before the first `record`."""
        total = 0
        for path in self._leftovers:
            events = read_segment(path)
            if events:
                keep(events)
                total += len(events)
            path.unlink()
        self._leftovers = []
        return total

    # -- the hot path --------------------------------------------------------------------------
    def record(self, events: Sequence[Event]) -> None:
        """Append `events` as one record before they are handed on."""
        if not events:
            return
        now = self._clock()
        if self._seg == 0 or now - self._opened_at >= self._rotate_s:
            if not self._rotate(now):
                return
        buf = self._buf
        buf.clear()
        buf += b"\0\0\0\0"
        _encoder.encode_into(events, buf, 4)
        _HEADER.pack_into(buf, 0, len(buf) - 4)
        try:
            written = os.write(self._fd, buf)
            if written != len(buf):
                raise OSError(f"short write: {written} of {len(buf)} bytes")
        except OSError as exc:
            self._failed(exc)
            return
        seg, of = self._seg, self._of
        for ev in events:
            of[id(ev)] = seg
        self._open[seg] += len(events)
        st = self.stats
        st["records"] += 1
        st["events"] += len(events)
        st["bytes"] += len(buf)

    def settled(self, events: Sequence[object]) -> None:
        """These events are durable (the flusher committed, spooled or set them aside)."""
        of, open_ = self._of, self._open
        done: list[int] = []
        for ev in events:
            seg = of.pop(id(ev), None)
            if seg is not None:
                left = open_[seg] - 1
                open_[seg] = left
                if left == 0 and seg != self._seg:
                    done.append(seg)
        for seg in done:
            self._delete(seg)

    # -- segments ------------------------------------------------------------------------------
    def _path(self, seg: int) -> Path:
        return self.directory / f"{seg:012d}{SUFFIX}"

    def _rotate(self, now: float) -> bool:
        old = self._seg
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        seg = self._next
        try:
            self._fd = os.open(
                self._path(seg), os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600
            )
        except OSError as exc:
            self._seg = 0
            self._failed(exc)
            self._opened_at = now  # try again at the next rotation, not on every frame
            return False
        self._next += 1
        self._seg, self._opened_at = seg, now
        self._open[seg] = 0
        if old and self._open.get(old) == 0:
            self._delete(old)
        if self.error:
            log.warning("the journal at %s takes writes again", self.directory)
            self.error = ""
        return True

    def _delete(self, seg: int) -> None:
        del self._open[seg]
        try:
            self._path(seg).unlink()
        except OSError as exc:
            log.warning("journal segment %s not deleted (%s)", self._path(seg), exc)
            return
        self.stats["segments_deleted"] += 1

    def _failed(self, exc: OSError) -> None:
        self.stats["errors"] += 1
        if not self.error:
            log.error(
                "the journal at %s refuses writes (%s): a kill now would lose what is in "
                "memory; intake goes on",
                self.directory,
                exc,
            )
        self.error = repr(exc)[:300]

    def close(self) -> int:
        """At a stop, after the flusher: delete the segments whose events are all durable;
        returns how many events are still not (their segments stay for the next start)."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        self._seg = 0
        for seg, left in list(self._open.items()):
            if left == 0:
                self._delete(seg)
        return sum(self._open.values())

    def as_dict(self) -> dict[str, object]:
        return {
            **self.stats,
            "segments": len(self._open),
            "pending": len(self._of),
            "error": self.error,
        }


def read_segment(path: Path) -> list[Event]:
    """The events of a segment, in order; a torn or unreadable record ends it (logged)."""
    data = path.read_bytes()
    events: list[Event] = []
    pos, end = 0, len(data)
    while pos < end:
        if end - pos < 4:
            break
        (size,) = _HEADER.unpack_from(data, pos)
        if pos + 4 + size > end:
            break
        try:
            events += _decoder.decode(data[pos + 4 : pos + 4 + size])
        except msgspec.DecodeError as exc:
            log.error("journal %s: an unreadable record at byte %d (%s); the rest skipped",
                      path, pos, exc)  # fmt: skip
            return events
        pos += 4 + size
    if pos < end:
        log.warning("journal %s: a torn record at its end (%d bytes) skipped", path, end - pos)
    return events
