"""The Redis lease with a fencing token (redis_lease.py) on the real Redis: one holder at a
time, a standby takes over within 5 s of the holder's death, and the old holder, back, can
neither renew nor pass the fencing check."""

from __future__ import annotations

import time

import coredis
import trio

from tradestream.redis_lease import Lease, run_lease


async def test_one_holder_then_a_standby_takes_over(redis_url: str, prefix: str) -> None:
    name = f"{prefix}appkey-1"
    async with coredis.Redis.from_url(redis_url, decode_responses=True) as r:
        leader = Lease(r, name, "ingest-a", ttl_ms=1500)
        standby = Lease(r, name, "ingest-b", ttl_ms=1500)
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                token = await nursery.start(run_lease, leader)
                assert token >= 1 and leader.valid()
                assert await standby.acquire() == 0  # held: no second holder
                # the leader "dies": it stops renewing (its task ends without a release)
                nursery.cancel_scope.cancel()
            died = time.monotonic()
            async with trio.open_nursery() as nursery:
                new_token = await nursery.start(run_lease, standby)
                took_over_s = time.monotonic() - died
                assert new_token == token + 1  # a larger fencing token
                # the old leader comes back: its renewal is refused and it is fenced out
                assert await leader.renew() is False and not leader.valid()
                assert await leader.fenced(token) is True
                assert await standby.fenced(new_token) is False
                nursery.cancel_scope.cancel()
        assert took_over_s < 5.0
        assert leader.state.losses == 1 and standby.state.token == new_token
        await standby.release()
        assert await r.get(f"tradestream:lease:{name}") is None
        await r.delete([f"tradestream:fence:{name}"])


async def test_a_holder_whose_renewal_fails_gives_up_at_once(redis_url: str, prefix: str) -> None:
    """The lease taken away under the holder (an operator's DEL, a failover that lost it): the
    next renewal is refused and run_lease returns, ending the holder's scope."""
    name = f"{prefix}appkey-2"
    async with coredis.Redis.from_url(redis_url, decode_responses=True) as r:
        lease = Lease(r, name, "ingest-a", ttl_ms=1500)
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                ended = trio.Event()

                async def hold() -> None:
                    await run_lease(lease)  # acquires, renews, returns when lost
                    ended.set()

                nursery.start_soon(hold)
                while not lease.valid():  # noqa: ASYNC110  (Redis, another party)
                    await trio.sleep(0.05)
                await r.delete([f"tradestream:lease:{name}"])
                await ended.wait()
        assert lease.state.token == 0 and lease.state.losses == 1 and not lease.valid()
        await r.delete([f"tradestream:fence:{name}"])
