"""An example strategy: Korean headline keywords -> watch signals. It does NOT trade.

Seed 000's `TradingLogic.process_news` ran trading logic on every LS NWS headline. This is the
honest, simple version of that idea: a headline that names a stock (its primary ticker) and
contains one of a few well-known disclosure keywords yields a "watch_long" or "watch_short"
signal with the latest traded price, for a human or a downstream strategy to act on. It places
no orders and sizes nothing (`quantity` is always None).

Keyword list (substring match on the raw title, spaces as written, so "최대 실적" and
"최대실적" are listed separately and no spurious match spans a word break):

    watch_long : 수주 (order won), 공급계약 (supply contract), 흑자전환 (turned to profit),
                 최대 실적 / 최대실적 / 사상 최대 (record results), 자사주 매입 / 자사주매입 /
                 자사주 소각 / 자사주소각 (buyback, cancellation). A bare 자사주 is not listed:
                 자사주 처분 (disposal) usually weighs on the price.
    watch_short: 유상증자 (rights issue; 무상증자 does not match), 적자전환 (turned to loss),
                 횡령 (embezzlement), 배임 (breach of trust), 거래정지 (trading halt),
                 상장폐지 (delisting).

Known limits, on purpose: no negation ("횡령 혐의 벗어" still reads short), no weighting; a
headline with keywords on both sides is ambiguous and yields nothing. Only the primary ticker
is signalled (LS lists related codes after it). Duplicate headlines (same `realkey`, as LS
re-sends on resubscribe) yield one signal.

Prices: the strategy wants News only. The latest price comes from a read-only view of the
router's latest trade per code (`MarketState.latest`), read when a headline is handled, rather
than from consuming ticks: ticks arrive at the trade rate and would share the strategy's
bounded queue with the news it exists for, so a burst of them would drop headlines (and the
price read is fresher than the last tick queued before the news anyway).

Pure core (`match_keyword`, `NewsKeywordRules`) beside the async `handle` the host calls.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from tradestream.events import News, Tick

WATCH_LONG = "watch_long"
WATCH_SHORT = "watch_short"

Keywords = Mapping[str, tuple[str, ...]]  # signal -> keywords, checked in order

KEYWORDS: Keywords = MappingProxyType(
    {
        WATCH_LONG: (
            "수주",
            "공급계약",
            "흑자전환",
            "최대 실적",
            "최대실적",
            "사상 최대",
            "자사주 매입",
            "자사주매입",
            "자사주 소각",
            "자사주소각",
        ),
        WATCH_SHORT: ("유상증자", "적자전환", "횡령", "배임", "거래정지", "상장폐지"),
    }
)

SEEN_NEWS_MAX = 10_000  # realkeys remembered for de-duplication (oldest forgotten first)


@dataclass(frozen=True, slots=True)
class KeywordMatch:
    signal: str  # WATCH_LONG or WATCH_SHORT
    keyword: str  # the first keyword found, in list order


def match_keyword(title: str, keywords: Keywords = KEYWORDS) -> KeywordMatch | None:
    """The one side a headline's keywords point to, or None (no keyword, or both sides)."""
    found: list[KeywordMatch] = []
    for signal, words in keywords.items():
        for word in words:
            if word in title:
                found.append(KeywordMatch(signal, word))
                break
    return found[0] if len(found) == 1 else None


class NewsKeywordRules:
    """The strategy's state and decisions, without async: seen news; prices are read from
    `prices` (latest trade per code, owned by someone else) as each headline is decided."""

    def __init__(
        self,
        prices: Mapping[str, Tick],
        *,
        universe: frozenset[str] | None = None,
        keywords: Keywords = KEYWORDS,
        seen_max: int = SEEN_NEWS_MAX,
    ) -> None:
        self.prices: Mapping[str, Tick] = MappingProxyType(prices)  # read, never written
        self.universe = universe  # None: any ticker; else tickers outside it yield nothing
        self.keywords = keywords
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._seen_max = seen_max

    def on_news(self, news: News) -> list[dict[str, Any]]:
        if news.realkey in self._seen:
            return []
        self._seen[news.realkey] = None
        if len(self._seen) > self._seen_max:
            self._seen.popitem(last=False)
        ticker = news.ticker
        if not ticker or (self.universe is not None and ticker not in self.universe):
            return []
        m = match_keyword(news.title, self.keywords)
        if m is None:
            return []
        last = self.prices.get(ticker)
        return [
            {
                "signal": m.signal,
                "symbol": ticker,
                "quantity": None,  # a watch signal: this strategy never sizes or places orders
                "reason": f"{m.keyword} in headline",
                "headline": news.title,
                "price": None if last is None else last.price,  # None: no trade seen yet
                "news_id": news.realkey,
            }
        ]


class NewsKeywordStrategy:
    """`Strategy` for the host: wants News only; `prices` is the latest trade per code, a
    mapping the caller keeps current (the service passes the router's `state.latest`). It is
    only read, through a read-only proxy.

    No `reset()`: each event updates its state in one step, so a failure cannot leave it half
    done, and forgetting seen realkeys on a restart would re-signal re-sent headlines.
    """

    wants: tuple[type, ...] = (News,)

    def __init__(
        self,
        id: str = "news-keywords",
        *,  # the Strategy field's name
        prices: Mapping[str, Tick],
        universe: frozenset[str] | None = None,
        keywords: Keywords = KEYWORDS,
    ) -> None:
        self.id = id
        self.rules = NewsKeywordRules(prices, universe=universe, keywords=keywords)

    async def handle(self, event: Any) -> list[dict[str, Any]]:
        return self.rules.on_news(event) if isinstance(event, News) else []
