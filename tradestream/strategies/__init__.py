"""Strategies: plug-ins that consume events and emit signal payloads, run under supervision.

`host.StrategyHost` owns one bounded queue and one supervised task per strategy, so a slow,
hung or crashing strategy never blocks the feed or the store; `news.NewsKeywordStrategy` is a
small example (headline keywords -> watch signals; it never trades).
"""

from tradestream.strategies.host import Strategy, StrategyHost, restart_delay
from tradestream.strategies.news import NewsKeywordStrategy

__all__ = ["NewsKeywordStrategy", "Strategy", "StrategyHost", "restart_delay"]
