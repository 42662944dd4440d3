"""What the pipeline publishes besides routed feed events: signals (scans, producers, Redis),
strategy signals, and the end of subscriptions whose upstream slot was lost.

Each is broadcast to the gateway's clients through the hub and, where it is data, stored
through the side edge (pipeline/side.py). Nothing here waits.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

import msgspec
import trio

from tradestream import topics, wire
from tradestream.events import KST, Alert, Event, Signal
from tradestream.hub import Hub, Msg
from tradestream.pipeline.stages import alert_data

log = logging.getLogger(__name__)

SIGNAL_KINDS = ("vcp", "daytrading")
MAX_SIGNALS = 500  # signals in one message (REST body, Redis message)


class SignalPublisher:
    """Broadcasts a set of signals of one kind on `signal:{kind}` and stores one row each."""

    def __init__(
        self,
        hub: Hub,
        store: Callable[[Event], None],
        names: Callable[[str], str] = lambda code: "",
    ) -> None:
        self._hub = hub
        self._store = store
        self._names = names  # a signal without a `name` gets its code's
        self.published = 0

    def publish(self, kind: str, signals: Sequence[dict[str, Any]], source: str) -> int:
        """Returns how many subscriptions it reached."""
        now = datetime.now(KST)
        signals = [self._named(s) for s in signals]
        msg = Msg(
            wire.signal_update(kind, list(signals), now.isoformat()),
            "signal_update",
            time.time_ns(),
        )
        n = self._hub.publish(topics.signal(kind), msg)
        for item in signals:
            self._store(
                Signal(
                    source,
                    kind,
                    kind,
                    str(item.get("symbol", ""))[:12],
                    dict(item),
                    now,
                    time.time_ns(),
                )
            )
        self.published += 1
        return n

    def _named(self, item: dict[str, Any]) -> dict[str, Any]:
        """`item` with its symbol's name, when it has none and the name is known."""
        symbol = item.get("symbol")
        if item.get("name") or not isinstance(symbol, str):
            return item
        name = self._names(symbol)
        return {**item, "name": name} if name else item

    def from_redis(self, channel: str, data: bytes) -> None:
        """``{"signal_type": "VCP", "signals": [...]}`` from an external worker; bad input is
        logged and dropped."""
        try:
            body = msgspec.json.decode(data)
            kind = str(body["signal_type"]).lower()
            signals = body["signals"]
            if (
                kind not in SIGNAL_KINDS
                or not isinstance(signals, list)
                or not all(isinstance(s, dict) for s in signals)
            ):
                raise ValueError("expected signal_type vcp|daytrading and a list of objects")
        except (msgspec.DecodeError, KeyError, TypeError, ValueError) as exc:
            log.warning("redis %s: dropped a bad signal message: %s", channel, exc)
            return
        self.publish(kind, signals[:MAX_SIGNALS], "redis")


class StrategyEmitter:
    """A strategy's payloads: `strategy_signal` on `strategy:{id}`, and a `Signal` row each
    (StrategyHost's `emit`)."""

    def __init__(self, hub: Hub, store: Callable[[Event], None]) -> None:
        self._hub = hub
        self._store = store

    def __call__(self, strategy_id: str, payload: dict[str, object]) -> None:
        topic = topics.strategy(strategy_id)
        self._hub.publish(
            topic,
            Msg(wire.strategy_signal(strategy_id, payload), "strategy_signal", time.time_ns()),
        )
        self._store(
            Signal(
                "strategy",
                topic,
                strategy_id,
                str(payload.get("symbol") or "")[:12],
                payload,
                datetime.now(KST),
                time.time_ns(),
            )
        )


def revoke_slot(hub: Hub, tr_id: str, code: str, reason: str) -> None:
    """An upstream slot was lost for good: the subscriptions to its topic end with a
    `slot_lost` error, so subscribing again is a new claim."""
    topic = topics.for_registration(tr_id, code)
    hub.revoke(topic, Msg(wire.error("slot_lost", f"{topic}: {reason}", topic), "error"))


class AlertsOut:
    """Alerts for external consumers (seed 001) onto the Redis bridge's outgoing edge: best
    effort, never waits; a full edge drops and counts (`dropped_here`)."""

    def __init__(self, channel: str, out: trio.MemorySendChannel[tuple[str, bytes]]) -> None:
        self._channel = channel
        self._out = out
        self.dropped_here = 0

    def __call__(self, alert: Alert) -> None:
        try:
            self._out.send_nowait(
                (self._channel, msgspec.json.encode({"symbol": alert.code, **alert_data(alert)}))
            )
        except trio.WouldBlock:
            self.dropped_here += 1
