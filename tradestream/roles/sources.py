"""Adapters from broker clients to the shapes the core asks for (wiring, no rules)."""

from __future__ import annotations

from collections.abc import Callable

from tradestream.accounts import BrokerPosition
from tradestream.errors import PositionsError
from tradestream.feeds.kis.rest import KisRest, KisRestError, split_account


class KisBalancePositions:
    """The positions source (accounts.PositionsSource) from the broker's balance inquiry
    (kis-rest.md §3, every page). `on_names` gets the names the broker gave the holdings."""

    def __init__(
        self,
        rest: KisRest,
        account: str,
        on_names: Callable[[dict[str, str]], None] | None = None,
    ) -> None:
        split_account(account)  # a bad account number is found now, not at the first sync
        self._rest = rest
        self._account = account.replace("-", "")
        self._on_names = on_names
        self.name = f"kis inquire-balance {self._account[:4]}****{self._account[-2:]}"

    async def fetch(self) -> dict[str, dict[str, BrokerPosition]]:
        try:
            holdings = await self._rest.balance(self._account)
        except KisRestError as exc:
            raise PositionsError(str(exc)[:300]) from None
        if self._on_names is not None:
            names = {h.code: h.name for h in holdings if h.name}
            if names:
                self._on_names(names)
        return {
            self._account: {
                h.code: BrokerPosition(h.code, h.quantity, h.avg_price) for h in holdings
            }
        }

    async def aclose(self) -> None:
        """The client is shared: its owner closes it."""
