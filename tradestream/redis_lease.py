"""A lease in Redis with a fencing token: at most one live holder per name across the cluster
(KIS refuses a second WebSocket session per app key, so one ingest owns each key).

- `acquire` sets ``tradestream:lease:{name}`` only if nobody holds it (``SET NX PX``) and takes
  the next fencing token from ``tradestream:fence:{name}`` (``INCR``), in one script: every
  acquisition gets a larger token than any before it.
- `renew` extends the lease only while it is still ours (same holder and token), `release`
  deletes it only then. A holder that stops renewing (dead, frozen, cut off) loses the lease
  `ttl_ms` after its last renewal; a standby polling `acquire` then takes it.
- `valid()`: true only while the last successful renewal is younger than `ttl_ms` on the local
  clock, with a margin, so a holder stops acting *before* Redis could hand the lease on.
  `fenced(token)` says whether a larger token has been issued since: a write stamped with a
  stale token must be refused (the store and the publisher check it).

`run_lease` is the loop: poll until acquired, renew every third of the TTL, and return (so the
caller's scope ends) as soon as a renewal fails or is late.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import coredis
import trio

log = logging.getLogger(__name__)

TTL_MS = 3000  # a dead holder's lease is free this long after its last renewal
POLL_S = 0.5  # a standby tries this often
MARGIN = 0.8  # a holder acts only within this share of the TTL since its last renewal

_ACQUIRE = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  local token = redis.call('INCR', KEYS[2])
  redis.call('SET', KEYS[1], ARGV[1] .. ':' .. token, 'PX', ARGV[2])
  return token
end
return 0
"""
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


def _int(reply: object) -> int:
    """A script's integer reply."""
    if isinstance(reply, int | str | bytes):
        return int(reply)
    raise TypeError(f"unexpected reply {reply!r}")


@dataclass
class LeaseState:
    name: str
    holder: str
    token: int = 0  # 0: not held
    renewed_at: float = 0.0  # local monotonic time of the last successful acquire or renew
    acquisitions: int = 0
    losses: int = 0


class Lease:
    def __init__(
        self,
        client: coredis.Redis[str],
        name: str,
        holder: str,
        *,
        ttl_ms: int = TTL_MS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._r = client
        self._key = f"tradestream:lease:{name}"
        self._fence = f"tradestream:fence:{name}"
        self.ttl_ms = ttl_ms
        self._clock = clock
        self.state = LeaseState(name, holder)

    @property
    def _value(self) -> str:
        return f"{self.state.holder}:{self.state.token}"

    async def acquire(self) -> int:
        """The fencing token if the lease is now ours, else 0."""
        st = self.state
        token = _int(
            await self._r.eval(
                _ACQUIRE, keys=[self._key, self._fence], args=[st.holder, self.ttl_ms]
            )
        )
        if token:
            st.token, st.renewed_at = token, self._clock()
            st.acquisitions += 1
        return token

    async def renew(self) -> bool:
        st = self.state
        if not st.token:
            return False
        ok = _int(await self._r.eval(_RENEW, keys=[self._key], args=[self._value, self.ttl_ms]))
        if ok:
            st.renewed_at = self._clock()
            return True
        self.lost()
        return False

    async def release(self) -> None:
        if self.state.token:
            await self._r.eval(_RELEASE, keys=[self._key], args=[self._value])
            self.state.token = 0

    def lost(self) -> None:
        """Not ours any more (refused, failed or late): stop acting on it."""
        if self.state.token:
            self.state.token = 0
            self.state.losses += 1

    def valid(self) -> bool:
        st = self.state
        return bool(st.token) and self._clock() - st.renewed_at < MARGIN * self.ttl_ms / 1000

    async def fenced(self, token: int) -> bool:
        """True if a token larger than `token` has been issued (a newer holder exists)."""
        current = await self._r.get(self._fence)
        return current is not None and int(current) > token


async def run_lease(
    lease: Lease,
    *,
    poll_s: float = POLL_S,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Hold `lease`: started() with the fencing token once acquired; returns once it is lost
    (a renewal refused, failed or late), so the caller's leadership scope ends with it."""
    while not await lease.acquire():  # noqa: ASYNC110  (the holder is another process)
        await trio.sleep(poll_s)
    log.info("lease %s: held by %s with token %d",
             lease.state.name, lease.state.holder, lease.state.token)  # fmt: skip
    task_status.started(lease.state.token)
    every = lease.ttl_ms / 1000 / 3
    while True:
        await trio.sleep(every)
        try:
            with trio.fail_after(every):
                renewed = await lease.renew()
        except (trio.TooSlowError, OSError, coredis.exceptions.RedisError) as exc:
            log.warning("lease %s: renewal failed (%r)", lease.state.name, exc)
            renewed = False
        if not renewed or not lease.valid():
            lease.lost()
            log.warning("lease %s: lost by %s", lease.state.name, lease.state.holder)
            return
