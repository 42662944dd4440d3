"""What the gateway needs from the rest of the service, as interfaces.

In the all-in-one process the router's state, the slot driver and the signal publisher
implement them; a gateway fed over Redis implements the same ones from what it receives.
Nothing here imports an implementation.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from tradestream.errors import ProtocolError
from tradestream.events import OrderBook, Tick
from tradestream.hub import Msg
from tradestream.topics import Topic


class MarketView(Protocol):
    """The market as it stands: the current value of a topic for a new subscriber, get_price,
    get_account and the codes a scan reads."""

    def tick(self, code: str) -> Tick | None: ...

    def book(self, code: str) -> OrderBook | None: ...

    def last_message(self, topic: str) -> Msg | None:
        """The latest message of a conflated topic without a per-code state (indexes, the
        market gate)."""

    def account_snapshot(self, accounts: Iterable[str]) -> dict[str, Any]: ...

    def account_names(self) -> list[str]: ...

    def traded_codes(self) -> list[str]: ...

    def name(self, code: str) -> str:
        """The code's name ("" if unknown)."""


class Demand(Protocol):
    """Upstream data for a client's topic: granted, or refused with a ProtocolError."""

    def claim(self, owner: int, topic: Topic, user: str = "") -> None: ...

    def release(self, owner: int, topic: Topic) -> None: ...


@dataclass(frozen=True)
class StaticDemand:
    """Fixed upstream registrations: a price or order-book topic is served only for a code
    that is streamed (`not_streamed` otherwise)."""

    prices: frozenset[str] = frozenset()
    books: frozenset[str] = frozenset()

    def claim(self, owner: int, topic: Topic, user: str = "") -> None:
        if topic.kind == "price" and topic.arg not in self.prices:
            raise ProtocolError("not_streamed", f"{topic.arg} is not on the watchlist")
        if topic.kind == "orderbook" and topic.arg not in self.books:
            raise ProtocolError("not_streamed", f"no order-book stream for {topic.arg}")

    def release(self, owner: int, topic: Topic) -> None:
        pass


class Slots(Protocol):
    """The slot manager's REST face (slots/driver.py)."""

    def listing(self, *, admin: bool = True) -> dict[str, Any]: ...

    def summary(self, *, admin: bool = True) -> dict[str, Any]: ...

    def set_picks(self, keys: Iterable[tuple[str, str]]) -> Any:
        """Replace the daily picks; returns the changes (`.ops`, each with an `.action`)."""

    def pending(self) -> list[dict[str, Any]]: ...


class ScannerInput(Protocol):
    """Scanner finds posted by a producer (they take scanner slots before the movers)."""

    def post(self, codes: Sequence[str]) -> list[str]:
        """Replace the posted finds; returns them as they now stand, sorted."""


class Signals(Protocol):
    """Broadcast and store a set of signals of one kind; returns the subscriptions reached."""

    def publish(self, kind: str, signals: Sequence[dict[str, Any]], source: str) -> int: ...
