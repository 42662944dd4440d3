"""Capped exponential backoff with jitter, as a pure value object (no clock, no sleeping)."""

from __future__ import annotations

import math
import random


class Backoff:
    """Delays for reconnect attempts: initial * factor**n, capped, with "equal jitter".

    Each delay is drawn from [d/2, d] where d is the capped exponential delay, so clients that
    lost the same upstream at once do not reconnect in lockstep, and no delay is ever shorter
    than half the schedule. `reset()` after the first good frame of a connection, not after the
    connect itself: a server that accepts and then drops at once must still be backed off.
    """

    def __init__(
        self,
        initial_s: float = 0.25,
        cap_s: float = 2.0,
        factor: float = 2.0,
        rng: random.Random | None = None,
    ) -> None:
        if not (0 < initial_s <= cap_s < math.inf and 1 <= factor < math.inf):
            raise ValueError("need 0 < initial_s <= cap_s < inf and 1 <= factor < inf")
        self.initial_s = initial_s
        self.cap_s = cap_s
        self.factor = factor
        self._rng = rng or random.Random()
        self.attempt = 0

    def peek(self) -> float:
        """The upper bound of the next delay."""
        try:
            return min(self.cap_s, self.initial_s * self.factor**self.attempt)
        except OverflowError:
            return self.cap_s

    def next(self) -> float:
        d = self.peek()
        if d < self.cap_s:  # stop counting once capped: factor**attempt must not overflow
            self.attempt += 1
        return d / 2 + self._rng.random() * d / 2

    def reset(self) -> None:
        self.attempt = 0
