"""SlotDriver.run on the mock clock: one step per TICK_S, and the stale -> re-register path at
exact virtual times."""

from __future__ import annotations

import trio
import trio.testing

from tradestream.feeds.session import FeedStatus
from tradestream.slots.driver import TICK_S, SlotDriver, SlotSession
from tradestream.slots.policy import SlotManager
from tradestream.upstream import Op


class LiveSink:
    """A session that is always connected: records each op with its virtual time."""

    def __init__(self) -> None:
        self.ops: list[tuple[float, str, str]] = []
        self.regs: set[tuple[str, str]] = set()

    def send_op(self, op: Op) -> bool:
        self.ops.append((trio.current_time(), op.action, op.code))
        (self.regs.add if op.action == "subscribe" else self.regs.discard)((op.tr_id, op.code))
        return True

    def registered(self) -> frozenset[tuple[str, str]]:
        return frozenset(self.regs)


async def test_run_reregisters_a_silent_slot_once(autojump_clock: trio.testing.MockClock) -> None:
    sink, status = LiveSink(), FeedStatus("kis-1", state="streaming")
    driver = SlotDriver(
        SlotManager({"kis-1": 3}, stale_s=10.0), [SlotSession("kis-1", 3, sink, status)]
    )
    driver.set_picks([("H0STCNT0", "000001"), ("H0STCNT0", "000002")])
    assert [op[1:] for op in sink.ops] == [("subscribe", "000001"), ("subscribe", "000002")]
    async with trio.open_nursery() as nursery:
        await nursery.start(driver.run)
        for _ in range(15):  # 000002 keeps trading, 000001 is silent
            driver.on_data("H0STCNT0", "000002", "kis-1")
            await trio.sleep(TICK_S)
        nursery.cancel_scope.cancel()
    # the first step (t=1) sees the market open: 10 s of silence from then is t=11
    assert sink.ops[2:] == [(11.0, "unsubscribe", "000001"), (11.0, "subscribe", "000001")]
    assert driver.stats["stale_reregistered"] == 1 and driver.stats["reconciled"] == 0
    assert sink.regs == {("H0STCNT0", "000001"), ("H0STCNT0", "000002")}
