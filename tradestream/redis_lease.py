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

`lead` is the ingest role's loop, with the token taken from the database (store/fence.py), so
that it survives a Redis restart and the database itself refuses a stale writer. There, a Redis
outage does not end the leadership: the holder keeps taking in and storing (the fences stop it
if somebody else takes over meanwhile) and, once Redis answers again, renews or, if Redis lost
the key, takes it back with the same token (`reassert`) unless a newer holder exists. Only a
newer holder ends it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import coredis
import trio

from tradestream.backoff import Backoff
from tradestream.redis_bridge import REDIS_LOST, first_leaf, redis_client

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
# won by `holder:0` (`claim`), then sealed with a token from elsewhere: the lease's value and
# the fence (never lowered)
_CLAIM = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
return 0
"""
_SEAL = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
local f = redis.call('GET', KEYS[2])
if (not f) or tonumber(f) < tonumber(ARGV[4]) then redis.call('SET', KEYS[2], ARGV[4]) end
return 1
"""
# the holder's value again after Redis lost it; -1: a newer token exists, 0: held by another
_REASSERT = """
local f = redis.call('GET', KEYS[2])
if f and tonumber(f) > tonumber(ARGV[3]) then return -1 end
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
elseif not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return 0
end
if not f then redis.call('SET', KEYS[2], ARGV[3]) end
return 1
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
        client: coredis.Redis[Any] | None,
        name: str,
        holder: str,
        *,
        ttl_ms: int = TTL_MS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._r: Any = client  # None until `use` (lead connects for itself)
        self._key = f"tradestream:lease:{name}"
        self.fence_key = self._fence = f"tradestream:fence:{name}"
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

    def use(self, client: coredis.Redis[Any]) -> None:
        """Talk to Redis through `client` from now on (a new connection after an outage)."""
        self._r = client

    async def acquire_with(self, take_token: Callable[[], Awaitable[int]]) -> int:
        """`acquire`, with the token from `take_token()` (the database's) once the lease is
        won; the fence is raised to it. 0 if not won (or lost while the token was taken)."""
        st = self.state
        claim = f"{st.holder}:0"
        if not _int(await self._r.eval(_CLAIM, keys=[self._key], args=[claim, self.ttl_ms])):
            return 0
        token = await take_token()
        value = f"{st.holder}:{token}"
        sealed = await self._r.eval(
            _SEAL, keys=[self._key, self._fence], args=[claim, value, self.ttl_ms, token]
        )
        if not _int(sealed):
            return 0
        st.token, st.renewed_at = token, self._clock()
        st.acquisitions += 1
        return token

    async def reassert(self) -> int:
        """After Redis lost the key (a restart): hold it again with the same token. 1: held,
        0: somebody else holds it now, -1: a newer token was issued (we are deposed)."""
        st = self.state
        if not st.token:
            return -1
        done = _int(
            await self._r.eval(
                _REASSERT, keys=[self._key, self._fence], args=[self._value, self.ttl_ms, st.token]
            )
        )
        if done == 1:
            st.renewed_at = self._clock()
        return done

    async def renew(self) -> bool:
        st = self.state
        if not st.token:
            return False
        if await self.extend():
            return True
        self.lost()
        return False

    async def extend(self) -> bool:
        """Renew without giving up on a refusal (`lead` then tries `reassert`)."""
        ok = _int(await self._r.eval(_RENEW, keys=[self._key], args=[self._value, self.ttl_ms]))
        if ok:
            self.state.renewed_at = self._clock()
        return bool(ok)

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


async def lead(
    url: str,
    lease: Lease,
    take_token: Callable[[], Awaitable[int]],
    *,
    poll_s: float = POLL_S,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """The ingest's leadership (see the module's doc): wait as a standby until the lease is
    won, then started() with the database's token; return once a newer holder exists."""
    st = lease.state
    every = lease.ttl_ms / 1000 / 3
    backoff = Backoff(0.25, 5.0)
    while True:
        try:
            async with redis_client(url) as r:
                lease.use(r)
                backoff.reset()
                if not st.token:
                    while not await lease.acquire_with(take_token):  # noqa: ASYNC110
                        await trio.sleep(poll_s)  # the holder is another process
                    log.info("lease %s: held by %s with token %d", st.name, st.holder, st.token)
                    task_status.started(st.token)
                    task_status = trio.TASK_STATUS_IGNORED
                while True:
                    with trio.fail_after(every):
                        if not await lease.extend():
                            verdict = await lease.reassert()
                            if verdict != 1:
                                lease.lost()
                                log.warning(
                                    "lease %s: %s holds it now; %s steps down",
                                    st.name,
                                    "a newer ingest" if verdict < 0 else "another ingest",
                                    st.holder,
                                )
                                return
                            log.info("lease %s: held again by %s", st.name, st.holder)
                    await trio.sleep(every)
        except* (*REDIS_LOST, trio.TooSlowError) as group:
            lost = first_leaf(group)
        await trio.lowlevel.checkpoint()
        delay = backoff.next()
        log.warning(
            "lease %s: Redis unreachable (%r); %s in %.1f s",
            st.name,
            lost,
            "still leading, retrying" if st.token else "standing by, retrying",
            delay,
        )
        await trio.sleep(delay)
