"""Strategies from configuration: ``TRADESTREAM_STRATEGIES``, items separated by ``;``, each a
name with optional JSON parameters::

    news
    news{"keywords": {"watch_long": ["수주", "공급계약"], "watch_short": ["횡령"]}}
    mypackage.momentum:Momentum{"window_s": 60}; news

A name is an entry point of the ``tradestream.strategies`` group (the package's own ``news``
is one; an installed package adds its own the same way) or a ``module:callable`` path. The
callable is called with the parameters as keywords, plus, when it takes them, ``prices`` (the
router's latest trade per code, read-only) and ``names`` (code -> name). It must return a
`Strategy` (an ``id``, ``wants`` and an async ``handle``); ids must be unique. Anything wrong
is a `ConfigError` naming the item, found at start.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib.metadata import entry_points
from types import MappingProxyType
from typing import Any

import msgspec

from tradestream.errors import ConfigError
from tradestream.events import Tick
from tradestream.strategies.host import Strategy

GROUP = "tradestream.strategies"
SETTING = "TRADESTREAM_STRATEGIES"


@dataclass(frozen=True)
class StrategySpec:
    name: str
    params: Mapping[str, Any]


def parse_specs(raw: str) -> list[StrategySpec]:
    """``name[{json}]`` items separated by ``;`` (a ``;`` inside the JSON is fine)."""
    out: list[StrategySpec] = []
    params: dict[str, Any]
    rest = raw.strip()
    while rest:
        brace = rest.find("{")
        semi = rest.find(";")
        if semi != -1 and (brace == -1 or semi < brace):
            name, params, rest = rest[:semi], {}, rest[semi + 1 :]
        elif brace == -1:
            name, params, rest = rest, {}, ""
        else:
            name = rest[:brace]
            params, end = _json_object(rest, brace)
            rest = rest[end:].lstrip()
            if rest and not rest.startswith(";"):
                raise ConfigError(f"{SETTING}: expected ';' after the parameters of {name!r}")
            rest = rest[1:]
        name = name.strip()
        if not name:
            raise ConfigError(f"{SETTING}: an item has no name")
        out.append(StrategySpec(name, params))
        rest = rest.strip()
    return out


def _json_object(text: str, start: int) -> tuple[dict[str, Any], int]:
    """The JSON object starting at `start` and where it ends (strings may hold braces)."""
    depth, in_str, esc = 0, False, False
    for i in range(start, len(text)):
        c = text[i]
        if in_str:
            esc, in_str = (False, in_str) if esc else (c == "\\", c != '"')
            continue
        if c == '"':
            in_str = True
        elif c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                try:
                    value = msgspec.json.decode(text[start : i + 1])
                except msgspec.DecodeError as exc:
                    raise ConfigError(f"{SETTING}: bad JSON parameters: {exc}") from None
                return value, i + 1
    raise ConfigError(f"{SETTING}: unclosed parameters {text[start:][:40]!r}")


def resolve(name: str) -> Callable[..., Any]:
    """An entry point of GROUP, or ``module:callable``."""
    found = [ep for ep in entry_points(group=GROUP) if ep.name == name]
    try:
        if found:
            return found[0].load()
        if ":" in name:
            module, _, attr = name.partition(":")
            obj: Any = importlib.import_module(module)
            for part in attr.split("."):
                obj = getattr(obj, part)
            if not callable(obj):
                raise TypeError(f"{name} is not callable")
            return obj
    except (ImportError, AttributeError, TypeError) as exc:
        raise ConfigError(f"{SETTING}: cannot load strategy {name!r}: {exc}") from None
    known = sorted(ep.name for ep in entry_points(group=GROUP))
    raise ConfigError(
        f"{SETTING}: unknown strategy {name!r} (installed: {', '.join(known) or 'none'}; "
        "or give module:callable)"
    )


def build_strategies(
    raw: str, *, prices: Mapping[str, Tick], names: Mapping[str, str]
) -> list[Strategy]:
    """The configured strategies, built; ConfigError names the item that failed."""
    out: list[Strategy] = []
    for spec in parse_specs(raw):
        factory = resolve(spec.name)
        kwargs = dict(spec.params)
        try:
            accepted = inspect.signature(factory).parameters
        except (TypeError, ValueError):
            accepted = MappingProxyType({})
        for extra, value in (("prices", prices), ("names", names)):
            if extra in accepted and extra not in kwargs:
                kwargs[extra] = MappingProxyType(value)
        try:
            strategy = factory(**kwargs)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{SETTING}: {spec.name}: {exc}") from None
        if not (
            isinstance(getattr(strategy, "id", None), str)
            and isinstance(getattr(strategy, "wants", None), tuple)
            and inspect.iscoroutinefunction(getattr(strategy, "handle", None))
        ):
            raise ConfigError(
                f"{SETTING}: {spec.name} did not make a strategy (an id, wants and an async handle)"
            )
        if any(s.id == strategy.id for s in out):
            raise ConfigError(f"{SETTING}: two strategies with the id {strategy.id!r}")
        out.append(strategy)
    return out
