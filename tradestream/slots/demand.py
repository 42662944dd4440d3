"""The gateway's demand for upstream slots, counted (pure: no I/O, no manager).

`DemandBook` owns who holds which registration for a client, and the per-user quota:
- a client topic maps to one (tr_id, code) registration (`price:X` -> trades, `orderbook:X` ->
  order book); codes served by other feeds (LS) need none;
- a registration is held by subscriptions, each a (connection id, topic as subscribed) pair, so
  `price:X` and `price:X@1s` on one connection are two holders. The manager's DEMAND claim is
  made for the first holder and released with the last; the driver makes those calls;
- the quota: a user may hold at most `max_per_user` registrations whose slot was made for their
  demand alone (0: no cap), so one client cannot take all the room there is for everybody's
  demand. Joining a slot that exists anyway (a pick, another user's demand) costs nothing.
"""

from __future__ import annotations

from tradestream.errors import SlotRefused
from tradestream.slots.policy import ORDER_BOOK_TR_ID, TRADES_TR_ID
from tradestream.topics import SLOT_TR_FOR_KIND, Topic

Key = tuple[str, str]  # (tr_id, code): one upstream registration
Holder = tuple[int, str]  # (connection id, topic as subscribed)

TR_FOR_KIND = SLOT_TR_FOR_KIND  # topic kind -> the registration that serves it


class DemandBook:
    """Reference counts of client subscriptions per registration, and the quota rule."""

    def __init__(
        self,
        *,
        static_prices: frozenset[str] = frozenset(),
        static_books: frozenset[str] = frozenset(),
        max_per_user: int = 0,
    ) -> None:
        self._static = {TRADES_TR_ID: static_prices, ORDER_BOOK_TR_ID: static_books}
        self._max_per_user = max_per_user
        self._holders: dict[Key, set[Holder]] = {}  # never an empty set: dropped instead
        self._user_keys: dict[str, set[Key]] = {}  # user -> registrations made for them
        self._made_for: dict[Key, str] = {}  # such a registration -> the user it was made for

    def __len__(self) -> int:
        """Registrations held for clients now."""
        return len(self._holders)

    def key(self, topic: Topic) -> Key | None:
        """The registration `topic` needs, or None: not a slot topic, or served without a
        KIS slot. Static codes never get holders, so None for them loses nothing on release."""
        tr_id = TR_FOR_KIND.get(topic.kind)
        if tr_id is None or topic.arg is None or topic.arg in self._static[tr_id]:
            return None
        return (tr_id, topic.arg)

    def join(self, key: Key, holder: Holder) -> bool:
        """Add `holder` to a registration that is held already; False when nobody holds it
        (the caller must claim the slot first, then `hold`)."""
        holders = self._holders.get(key)
        if not holders:
            return False
        holders.add(holder)
        return True

    def refusal(self, user: str, fresh: bool, topic: Topic) -> SlotRefused | None:
        """The `demand_limit` error when `user` may not make one more slot for their demand
        alone (`fresh`: the claim would make the slot), else None."""
        cap = self._max_per_user
        if not (fresh and user and cap and len(self._user_keys.get(user, ())) >= cap):
            return None
        return SlotRefused(
            "demand_limit",
            f"no upstream slot for {topic.name}: you already "
            f"hold {cap} streams that only your subscriptions need",
            topic.raw,
        )

    def hold(self, key: Key, holder: Holder, *, user: str, fresh: bool) -> None:
        """`holder` is the first holder of `key`, whose slot the manager granted; the slot
        counts against `user`'s quota when their claim made it (`fresh`)."""
        self._holders[key] = {holder}
        if fresh and user:
            self._user_keys.setdefault(user, set()).add(key)
            self._made_for[key] = user

    def leave(self, key: Key, holder: Holder) -> bool:
        """`holder` lets go of `key`; True when it was the last one (the key is dropped and
        the caller releases the manager's claim)."""
        holders = self._holders.get(key)
        if not holders or holder not in holders:
            return False
        holders.discard(holder)
        if holders:
            return False
        self.drop(key)
        return True

    def drop(self, key: Key) -> None:
        """No subscription holds `key` any more (the last one left, or its slot was dropped)."""
        self._holders.pop(key, None)
        user = self._made_for.pop(key, None)
        if user is not None:
            keys = self._user_keys[user]
            keys.discard(key)
            if not keys:
                del self._user_keys[user]
