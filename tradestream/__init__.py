"""tradestream: real-time Korean market data on one Trio nursery tree."""

__version__ = "0.1.0"
