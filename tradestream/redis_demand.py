"""Client demand across processes: a subscription on any gateway reaches the ingest's slot
manager, over Redis.

Gateway side (`RemoteDemand`, the gateway role's `Demand`): the topics its clients hold that
need an upstream registration (prices, order books, program trading), as (user, topic) pairs,
each with a generation: a pair claimed again after it was let go is a new claim (one that was
refused is asked again).
`run_demand_out` writes them whole to ``{base}:demand:{gateway}`` (a set) when they change and
at every beat, beats a heartbeat key (``{base}:gateway:{gateway}``, expiring after `TTL_S`: the
gateway's lease on its claims), registers the gateway in ``{base}:gateways`` and pushes its id
to ``{base}:demand:changed`` to wake the ingest. It also reads the ingest's verdicts on its
claims (``{base}:verdicts:{gateway}``, a list) and ends a refused subscription on its clients
with the error, as the all-in-one process refuses the subscribe.

Ingest side (`run_demand_in`, with `RemoteClaims` holding the pure part): woken by a change or
every second, it reads every registered gateway's set and brings the slot driver's claims to it,
one owner per (gateway, user), so the per-user demand limit holds across gateways. A gateway
whose heartbeat has expired (dead, or cut off) has its claims released; after a Redis restart
the gateways are given a heartbeat's time to come back before that is decided.

The back-pressure choice: claims are state, not a stream: each write replaces the whole set
(a gateway's last word wins), so nothing queues; a refusal is one list entry per refused pair.
"""

from __future__ import annotations

import itertools
import logging
import os
import secrets
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

import coredis
import msgspec
import trio

from tradestream import wire
from tradestream.errors import ProtocolError
from tradestream.hub import Hub, Msg
from tradestream.redis_bridge import reconnecting
from tradestream.slots.demand import TR_FOR_KIND
from tradestream.topics import Topic, parse_topic

log = logging.getLogger(__name__)

TTL_S = 10.0  # a gateway silent this long is dead: its claims are released
BEAT_S = 1.0  # a beat a second: a gateway starved for a few seconds is not taken for dead
POLL_S = 1.0  # the ingest looks at every gateway at least this often
SEP = "\x1f"  # between user and topic in a set member (neither may contain it)

Pair = tuple[str, str]  # (user, raw topic)
Claim = tuple[str, str, str]  # (user, raw topic, generation) as the ingest reads it


def gateway_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


@dataclass
class DemandStats:
    connects: int = 0
    last_error: str = ""
    writes: int = 0  # gateway: sets written; ingest: reconciliations
    claims: int = 0  # ingest: claims made for gateways
    releases: int = 0
    refused: int = 0  # ingest: verdicts sent; gateway: subscriptions ended by one
    dead_gateways: int = 0
    bad_members: int = 0  # set members that are not (user, topic) pairs: dropped, counted

    def as_dict(self) -> dict[str, object]:
        return dict(self.__dict__)


class _Keys:
    def __init__(self, base: str, gateway: str = "") -> None:
        self.gateways = f"{base}:gateways"
        self.changed = f"{base}:demand:changed"
        self.base = base
        self.gateway = gateway
        if gateway:
            self.demand = self.demand_of(gateway)
            self.beat = self.beat_of(gateway)
            self.verdicts = self.verdicts_of(gateway)

    def demand_of(self, gw: str) -> str:
        return f"{self.base}:demand:{gw}"

    def beat_of(self, gw: str) -> str:
        return f"{self.base}:gateway:{gw}"

    def verdicts_of(self, gw: str) -> str:
        return f"{self.base}:verdicts:{gw}"


class RemoteDemand:
    """The gateway role's `Demand`: every claim is granted here (the ingest decides); what
    needs an upstream slot is kept as (user, topic) pairs for `run_demand_out`."""

    def __init__(self) -> None:
        self._holders: dict[Pair, set[int]] = {}
        self._gen: dict[Pair, int] = {}
        self._gens = itertools.count(1)
        self._pair_of: dict[tuple[int, str], Pair] = {}
        self.version = 0  # bumped on every change of the pairs
        self._lot = trio.lowlevel.ParkingLot()

    def claim(self, owner: int, topic: Topic, user: str = "") -> None:
        if topic.kind not in TR_FOR_KIND or SEP in user:
            return
        pair = (user, topic.raw)
        holders = self._holders.setdefault(pair, set())
        if not holders:
            self._gen[pair] = next(self._gens)
            self._changed()
        holders.add(owner)
        self._pair_of[(owner, topic.raw)] = pair

    def release(self, owner: int, topic: Topic) -> None:
        pair = self._pair_of.pop((owner, topic.raw), None)
        if pair is None:
            return
        holders = self._holders[pair]
        holders.discard(owner)
        if not holders:
            del self._holders[pair], self._gen[pair]
            self._changed()

    def pairs(self) -> list[Pair]:
        return sorted(self._holders)

    def members(self) -> list[str]:
        return [f"{user}{SEP}{raw}{SEP}{self._gen[user, raw]}" for user, raw in self.pairs()]

    def _changed(self) -> None:
        self.version += 1
        self._lot.unpark_all()

    async def wait_change(self, seen: int) -> None:
        while self.version == seen:
            await self._lot.park()


async def run_demand_out(
    url: str,
    demand: RemoteDemand,
    hub: Hub,
    stats: DemandStats,
    *,
    base: str,
    gateway: str,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """The gateway's claims to Redis, and the ingest's verdicts back; until cancelled."""
    k = _Keys(base, gateway)

    async def body(r: coredis.Redis[bytes]) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_write_claims, r, demand, stats, k)
            nursery.start_soon(_read_verdicts, r, hub, stats, k)

    task_status.started()
    await reconnecting(url, stats, "demand out", body)


async def _write_claims(
    r: coredis.Redis[bytes], demand: RemoteDemand, stats: DemandStats, k: _Keys
) -> None:
    """The whole set at every beat (so a Redis that lost it has it again within a beat); the
    ingest is woken only when it changed."""
    written = -1
    while True:
        seen = demand.version
        members = demand.members()
        async with r.pipeline(transaction=True) as pipe:
            pipe.delete([k.demand])
            if members:
                pipe.sadd(k.demand, members)
            pipe.set(k.beat, "1", px=int(TTL_S * 1000))
            pipe.sadd(k.gateways, [k.gateway])
            if seen != written:
                pipe.rpush(k.changed, [k.gateway])
                pipe.ltrim(k.changed, -1000, -1)
        written = seen
        stats.writes += 1
        with trio.move_on_after(BEAT_S):
            await demand.wait_change(seen)


class _Verdict(msgspec.Struct):
    user: str
    topic: str
    code: str
    message: str


async def _read_verdicts(r: coredis.Redis[bytes], hub: Hub, stats: DemandStats, k: _Keys) -> None:
    while True:
        got = await r.blpop([k.verdicts], timeout=1)
        if not got:
            continue
        try:
            v = msgspec.json.decode(got[1], type=_Verdict)
            topic = parse_topic(v.topic)
        except (msgspec.DecodeError, ProtocolError) as exc:
            stats.bad_members += 1
            log.warning("demand: a verdict that cannot be used: %r (%s)", got[1][:200], exc)
            continue
        msg = Msg(wire.error(v.code, v.message, v.topic), "error")
        stats.refused += hub.revoke(topic.name, msg, user=v.user)


class Claims(Protocol):
    def claim(self, owner: int, topic: Topic, user: str = "") -> None: ...

    def release(self, owner: int, topic: Topic) -> None: ...


@dataclass
class RemoteClaims:
    """The ingest's view of the gateways' claims, applied to the slot driver (pure: no I/O).
    A refused pair is not retried while its gateway keeps it (the gateway ends the client's
    subscription on the verdict, and so releases it)."""

    driver: Claims
    stats: DemandStats = field(default_factory=DemandStats)
    held: dict[str, set[Claim]] = field(default_factory=dict)
    refused: dict[str, set[Claim]] = field(default_factory=dict)
    _owners: dict[tuple[str, str], int] = field(default_factory=dict)
    _ids: Iterable[int] = field(default_factory=lambda: itertools.count(-1, -1))

    def owner(self, gw: str, user: str) -> int:
        """One owner per (gateway, user), below the gateway's own client ids (positive)."""
        key = (gw, user)
        if key not in self._owners:
            self._owners[key] = next(iter(self._ids))
        return self._owners[key]

    def apply(self, gw: str, wanted: set[Claim] | None) -> list[_Verdict]:
        """Bring `gw`'s claims to `wanted` (None: the gateway is gone); the refusals."""
        held = self.held.get(gw, set())
        want = wanted or set()
        refused = self.refused.setdefault(gw, set())
        refused &= want
        for user, raw, _ in sorted(held - want):  # releases first: a new generation follows
            self.driver.release(self.owner(gw, user), parse_topic(raw))
            self.stats.releases += 1
        verdicts = []
        now_held = held & want
        for claim in sorted(want - held - refused):
            user, raw, _ = claim
            try:
                self.driver.claim(self.owner(gw, user), parse_topic(raw), user)
            except ProtocolError as exc:
                refused.add(claim)
                verdicts.append(_Verdict(user, raw, exc.code, str(exc)))
                self.stats.refused += 1
                continue
            now_held.add(claim)
            self.stats.claims += 1
        if wanted is None:
            self.held.pop(gw, None)
            self.refused.pop(gw, None)
            for key in [key for key in self._owners if key[0] == gw]:
                del self._owners[key]
        else:
            self.held[gw] = now_held
        return verdicts

    def claims(self, members: Iterable[bytes]) -> set[Claim]:
        """A gateway's set as claims; members that are not (user, topic, generation) with a
        valid topic are dropped and counted."""
        out = set()
        for m in members:
            parts = m.decode(errors="replace").split(SEP)
            try:
                user, raw, gen = parts
                parse_topic(raw)
            except (ValueError, ProtocolError):
                self.stats.bad_members += 1
                continue
            out.add((user, raw, gen))
        return out


async def run_demand_in(
    url: str,
    claims: RemoteClaims,
    *,
    base: str,
    clock: Callable[[], float] = trio.current_time,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """The ingest's side: apply every gateway's claims to the slot driver until cancelled."""
    k = _Keys(base)
    stats = claims.stats

    async def body(r: coredis.Redis[bytes]) -> None:
        connected_at = clock()
        while True:
            gateways = sorted(g.decode() for g in await r.smembers(k.gateways))
            async with r.pipeline(transaction=False) as pipe:
                beats = [pipe.exists([k.beat_of(gw)]) for gw in gateways]
                sets = [pipe.smembers(k.demand_of(gw)) for gw in gateways]
            verdicts: dict[str, list[_Verdict]] = {}
            settled = clock() - connected_at > TTL_S  # the gateways had time to come back
            for gw, beat, members in zip(gateways, beats, sets, strict=True):
                if await beat:
                    verdicts[gw] = claims.apply(gw, claims.claims(await members))
                elif settled:
                    log.warning("demand: gateway %s is gone: its claims are released", gw)
                    stats.dead_gateways += 1
                    claims.apply(gw, None)
                    await r.srem(k.gateways, [gw])
                    await r.delete([k.demand_of(gw), k.verdicts_of(gw)])
            for gw in set(claims.held) - set(gateways):
                if settled:  # forgotten by Redis (a restart) and not back
                    claims.apply(gw, None)
            stats.writes += 1
            for gw, vs in verdicts.items():
                if vs:
                    await r.rpush(k.verdicts_of(gw), [msgspec.json.encode(v) for v in vs])
            await r.blpop([k.changed], timeout=POLL_S)
            await r.delete([k.changed])  # one look covers every change so far

    task_status.started()
    await reconnecting(url, stats, "demand in", body)
