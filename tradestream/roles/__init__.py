"""Process roles, each a `run_<role>(settings, ..., *, task_status)`: `run_ingest` (brokers,
slots, router, store, detectors, strategies), `run_gateway` (hub clients, REST) and the
all-in-one `run_service` that nests them (the default)."""

from tradestream.roles.gateway import Gateway, IngestControls, run_gateway
from tradestream.roles.ingest import Ingest, run_ingest
from tradestream.roles.service import Running, run_service

__all__ = [
    "Gateway",
    "Ingest",
    "IngestControls",
    "Running",
    "run_gateway",
    "run_ingest",
    "run_service",
]
