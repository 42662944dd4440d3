"""Record every raw upstream frame with its receive time, and replay recordings.

A recording is gzip-compressed JSON lines, one per frame received from a broker:
``{"t": received_ns, "s": "kis-1", "b": "kis", "m": "<frame text>"}``, and a few of another
kind (``"k"``): a session's media table at its start (``"media"``) and the feed gaps it
reported (``"gap"``), so that a replay names the same media and stores the same gaps.
Replay decodes each frame with a fresh decoder of its broker (by the tag, from
feeds/registry.py), in order, so acknowledgements restore the AES keys of encrypted notices
exactly as they did live, and the events keep their recorded receive times: a replay into an
empty database stores the same rows as the live run.
"""

from __future__ import annotations

import gzip
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import trio

from tradestream.events import Event, FeedGap
from tradestream.feeds.registry import broker
from tradestream.feeds.session import Frame

log = logging.getLogger(__name__)

WRITE_BATCH = 1000  # frames per write to the file (one worker-thread call)


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(Frame)


@dataclass
class RecorderStats:
    frames: int = 0
    bytes: int = 0


async def run_recorder(
    frames_in: trio.MemoryReceiveChannel[Frame],
    path: Path,
    stats: RecorderStats | None = None,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Append frames to `path` until `frames_in` is closed and drained (the feeds hold its
    send ends, so this outlives them). Owns `frames_in`. Writes happen in a worker thread, a
    batch at a time; appending to an existing file adds a gzip member, which readers accept."""
    stats = stats if stats is not None else RecorderStats()
    path.parent.mkdir(parents=True, exist_ok=True)
    fh = await trio.to_thread.run_sync(gzip.open, path, "ab")
    try:
        with frames_in:
            task_status.started()
            while True:
                batch = [await _receive_or_none(frames_in)]
                if batch[0] is None:
                    return
                while len(batch) < WRITE_BATCH:
                    try:
                        batch.append(frames_in.receive_nowait())
                    except (trio.WouldBlock, trio.EndOfChannel):
                        break
                data = b"".join(_encoder.encode(f) + b"\n" for f in batch if f is not None)
                await trio.to_thread.run_sync(fh.write, data)
                stats.frames += len(batch)
                stats.bytes += len(data)
    finally:
        with trio.move_on_after(5.0, shield=True):
            await trio.to_thread.run_sync(fh.close)


async def _receive_or_none(ch: trio.MemoryReceiveChannel[Frame]) -> Frame | None:
    try:
        return await ch.receive()
    except trio.EndOfChannel:
        return None


def read_frames(path: Path) -> Iterator[Frame]:
    """The frames of a recording, in order. A truncated last line (a crash) is skipped."""
    with gzip.open(path, "rb") as fh:
        try:
            for line in fh:
                try:
                    yield _decoder.decode(line)
                except msgspec.DecodeError:
                    log.warning("%s: skipping an unreadable line", path)
        except EOFError:
            log.warning("%s: ends in a truncated gzip member (the recorder was killed)", path)


async def run_replay(
    path: Path,
    events_out: trio.MemorySendChannel[Event],
    *,
    speed: float = 0.0,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Decode a recording into `events_out`, pacing frames at `speed` times their recorded
    rate (0: as fast as the pipeline takes them). Owns `events_out`; returns at the end."""
    decoders: dict[str, Any] = {}  # session -> its broker's decoder (feeds/registry.py)
    frames = read_frames(path)
    first_t: int | None = None
    start = trio.current_time()
    n_frames = n_events = 0
    with events_out:
        task_status.started()
        while True:
            chunk = await trio.to_thread.run_sync(_take, frames, 2000)
            if not chunk:
                break
            for f in chunk:
                if f.k == "media":  # the session's table, before its first frame
                    decoders[f.s] = broker(f.b).new_decoder(f.s, media=msgspec.json.decode(f.m))
                    continue
                if f.k == "gap":
                    await events_out.send(msgspec.json.decode(f.m, type=FeedGap))
                    n_events += 1
                    continue
                dec = decoders.get(f.s)
                if dec is None:
                    dec = decoders[f.s] = broker(f.b).new_decoder(f.s)
                if speed > 0:
                    first_t = f.t if first_t is None else first_t
                    await trio.sleep_until(start + (f.t - first_t) / 1e9 / speed)
                out = dec.decode(f.m, f.t)
                n_frames += 1
                if isinstance(out, list):
                    for ev in out:
                        await events_out.send(ev)
                    n_events += len(out)
    log.info("replayed %s: %d frames, %d events", path, n_frames, n_events)


def _take(it: Iterator[Frame], n: int) -> list[Frame]:
    out = []
    for f in it:
        out.append(f)
        if len(out) >= n:
            break
    return out
