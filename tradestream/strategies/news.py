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

KEYWORDS: Keywords = MappingProxyType({
    WATCH_LONG: ("수주", "공급계약", "흑자전환", "최대 실적", "최대실적", "사상 최대",
                 "자사주 매입", "자사주매입", "자사주 소각", "자사주소각"),
    WATCH_SHORT: ("유상증자", "적자전환", "횡령", "배임", "거래정지", "상장폐지"),
})

SEEN_NEWS_MAX = 10_000  # realkeys remembered for de-duplication (oldest forgotten first)


@dataclass(frozen=True, slots=True)
class KeywordMatch:
    signal: str  # WATCH_LONG or WATCH_SHORT
    keyword: str  # the first keyword found, in list order


def match_keyword(title: str,
                  keywords: Keywords = KEYWORDS) -> KeywordMatch | None:
    """The one side a headline's keywords point to, or None (no keyword, or both sides)."""
    found: list[KeywordMatch] = []
    for signal, words in keywords.items():
        for word in words:
            if word in title:
                found.append(KeywordMatch(signal, word))
                break
    return found[0] if len(found) == 1 else None


class NewsKeywordRules:
    """The strategy's state and decisions, without async: latest price per code, seen news."""

    def __init__(self, *, universe: frozenset[str] | None = None,
                 keywords: Keywords = KEYWORDS,
                 seen_max: int = SEEN_NEWS_MAX) -> None:
        self.universe = universe  # None: any ticker; else tickers outside it yield nothing
        self.keywords = keywords
        self.prices: dict[str, int] = {}
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._seen_max = seen_max

    def on_tick(self, tick: Tick) -> None:
        self.prices[tick.code] = tick.price

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
        return [{
            "signal": m.signal,
            "symbol": ticker,
            "quantity": None,  # a watch signal: this strategy never sizes or places orders
            "reason": f"{m.keyword} in headline",
            "headline": news.title,
            "price": self.prices.get(ticker),
            "news_id": news.realkey,
        }]


class NewsKeywordStrategy:
    """`Strategy` for the host: wants News (to signal) and Tick (to know the latest price).

    No `reset()`: each event updates its state in one step, so a failure cannot leave it half
    done, and forgetting seen realkeys on a restart would re-signal re-sent headlines.
    """

    wants: tuple[type, ...] = (News, Tick)

    def __init__(self, id: str = "news-keywords", *,  # the Strategy field's name
                 universe: frozenset[str] | None = None,
                 keywords: Keywords = KEYWORDS) -> None:
        self.id = id
        self.rules = NewsKeywordRules(universe=universe, keywords=keywords)

    async def handle(self, event: Any) -> list[dict[str, Any]]:
        if isinstance(event, Tick):
            self.rules.on_tick(event)
            return []
        if isinstance(event, News):
            return self.rules.on_news(event)
        return []
