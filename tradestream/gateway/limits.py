"""Per-connection limits (pure): a token bucket for client messages."""

from __future__ import annotations


class TokenBucket:
    """`rate` tokens per second, at most `burst` saved up; one token per client message.

    Time is passed in (`now`, seconds on any monotonic clock), so the rule is tested without
    sleeping. A bucket starts full: a client may send `burst` messages at once after connecting.
    """

    __slots__ = ("rate", "burst", "_tokens", "_at")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be positive and burst at least 1")
        self.rate = rate
        self.burst = float(burst)
        self._tokens = float(burst)
        self._at = now

    def take(self, now: float) -> bool:
        """Spend one token if there is one; False means: over the limit, drop the message."""
        elapsed = now - self._at
        if elapsed > 0:
            self._tokens = min(self.burst, self._tokens + elapsed * self.rate)
            self._at = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False
