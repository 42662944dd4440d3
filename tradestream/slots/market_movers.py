"""Market-wide movers: the broker's fluctuation and volume rankings (kis-rest.md §4, §5) turned
into scanner finds for codes the service does not stream yet (seed 002's surging-stock
discovery, the SCANNER priority).

`choose_finds` is the rule (pure): risers from the fluctuation ranking at or above
`min_change_pct`, in rank order, then rising volume leaders, skipping codes already watched
(held, picked, asked for by a client), at most `n`. `run_market_movers` asks the broker every
`every_s` while the market is open (through the shared, rate-limited REST client) and hands
the finds to `ScannerSlots`; the slot policy's dwell and eviction rules do the rest. A failed
round is logged and counted, and the next round is the retry.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import trio

from tradestream.feeds.kis.rest import KisRest, KisRestError, Ranked

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Find:
    code: str
    name: str
    source: str  # "fluctuation" or "volume"
    rank: int
    change_pct: float

    @property
    def why(self) -> str:
        return f"{self.source} #{self.rank} {self.change_pct:+.2f}%"


def choose_finds(
    risers: Sequence[Ranked],
    volume: Sequence[Ranked],
    watched: Callable[[str], bool],
    n: int,
    min_change_pct: float,
) -> list[Find]:
    out: list[Find] = []
    seen: set[str] = set()
    for source, rows in (("fluctuation", risers), ("volume", volume)):
        for r in rows:
            if len(out) >= n:
                return out
            if r.code in seen or watched(r.code):
                continue
            if source == "fluctuation" and r.change_pct < min_change_pct:
                continue
            if source == "volume" and r.change_pct <= 0:
                continue  # heavy selling is not a find for a long-only day
            seen.add(r.code)
            out.append(Find(r.code, r.name, source, r.rank, r.change_pct))
    return out


@dataclass
class MoverStats:
    rounds: int = 0
    failures: int = 0
    last_error: str = ""
    finds: list[str] = field(default_factory=list)  # the last round's, as "code why"

    def as_dict(self) -> dict[str, object]:
        return dict(self.__dict__)


async def run_market_movers(
    rest: KisRest,
    apply: Callable[[list[Find]], None],
    watched: Callable[[str], bool],
    *,
    every_s: float,
    n: int,
    min_change_pct: float,
    market_open: Callable[[], bool],
    stats: MoverStats,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Every `every_s` while the market is open: rank, choose, `apply(finds)`. Runs until
    cancelled."""
    task_status.started()
    while True:
        if market_open():
            try:
                risers = await rest.fluctuation()
                volume = await rest.volume_rank()
            except KisRestError as exc:
                stats.failures += 1
                stats.last_error = str(exc)[:300]
                log.warning("market movers: %s; next try in %.0f s", exc, every_s)
            else:
                finds = choose_finds(risers, volume, watched, n, min_change_pct)
                stats.rounds += 1
                stats.last_error = ""
                stats.finds = [f"{f.code} {f.why}" for f in finds]
                apply(finds)
        await trio.sleep(every_s)
