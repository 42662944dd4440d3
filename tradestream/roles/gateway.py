"""The gateway role: the hub's clients over WebSocket, REST and metrics, served by hypercorn.

It reads the market through `MarketView` and asks for upstream data through `Demand`
(gateway/ports.py), so the same role serves from the router in one process, or from state fed
over Redis in a process of its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import trio
from sqlalchemy.engine import Engine

from tradestream.config import GatewaySettings
from tradestream.gateway.app import Status, create_app
from tradestream.gateway.auth import Authenticator
from tradestream.gateway.metrics import GatewayMetrics
from tradestream.gateway.ports import Demand, MarketView, ScannerInput, Signals, Slots
from tradestream.gateway.signals_api import register_signals
from tradestream.gateway.slots_api import register_slots
from tradestream.gateway.ws import StorePrices, WsServices
from tradestream.hub import Hub
from tradestream.serving import serve_app, ws_url


@dataclass
class Gateway:
    url: str  # e.g. http://127.0.0.1:8000
    ws_url: str
    auth: Authenticator
    metrics: GatewayMetrics


@dataclass(frozen=True)
class IngestControls:
    """The ingest's REST face, when it runs in this process: slots, scanner finds, signals."""

    slots: Slots
    scanner: ScannerInput
    signals: Signals
    kept_picks: tuple[tuple[str, str], ...] = ()  # picks a PUT of trades and books keeps


async def run_gateway(
    g: GatewaySettings,
    hub: Hub,
    market: MarketView,
    demand: Demand,
    *,
    status: Status | None = None,
    engine: Engine | None = None,
    controls: IngestControls | None = None,
    task_status: trio.TaskStatus[Gateway] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve `hub`'s clients until cancelled (the caller closes them first: hub.close_all).

    `engine` serves the REST reads, get_price's fallback and the scans; `controls` adds the
    slot and signal routes. started(): listening; returns `Gateway` with the bound URL."""
    auth = Authenticator(
        g.jwt_secret,
        algorithm=g.jwt_algorithm,
        public_key=g.jwt_public_key,
        leeway_s=g.jwt_leeway_s,
    )
    metrics = GatewayMetrics()
    ws = WsServices(
        hub, auth, market, demand, g, metrics, StorePrices(engine) if engine is not None else None
    )
    app = create_app(ws, status=status, engine=engine)
    if controls is not None:
        register_slots(
            app, controls.slots, auth, controls.scanner, controls.kept_picks, names=market.name
        )
        if engine is not None:
            register_signals(app, engine, auth, controls.signals, market.traded_codes)
    async with trio.open_nursery() as nursery:
        await nursery.start(hub.run_cadence)
        await nursery.start(hub.run_coalescer, g.batch_delay_s)
        binds = await nursery.start(
            partial(
                serve_app,
                app,
                g.host,
                g.port,
                graceful_s=g.graceful_s,
                max_message_bytes=g.max_message_bytes,
                write_timeout_s=g.send_timeout_s,
                on_write_timeout=metrics.closes.labels("send_timeout").inc,
            )
        )
        task_status.started(Gateway(binds[0], ws_url(binds[0], "/api/ws"), auth, metrics))
