"""KIS stock master files (kis-rest.md §8.3): every listed code with its Korean name.

``<base>/kospi_code.mst.zip`` and ``<base>/kosdaq_code.mst.zip`` each hold ``<name>.mst``:
cp949 text, one stock per line: the short code (9 characters, left-aligned), the ISIN (12),
the Korean name (variable width), then a fixed tail of 227 (KOSPI) or 221 (KOSDAQ) ASCII
characters whose first two are the security group (``ST`` share, ``EF`` ETF, ...). The name is
what lies between the ISIN and the tail, cut from the right as the broker's own parser does.

`parse_master` and `master_zip` (its inverse, for the simulator) are pure; `fetch_masters`
downloads both markets (no authentication, as the broker's samples do).
"""

from __future__ import annotations

import io
import logging
import zipfile
from collections.abc import Iterable
from typing import NamedTuple

import httpx

from tradestream.errors import FeedError

log = logging.getLogger(__name__)

DEFAULT_MASTER_URL = "https://new.real.download.dws.co.kr/common/master"
FILES = {"KOSPI": "kospi_code", "KOSDAQ": "kosdaq_code"}
TAIL = {"KOSPI": 227, "KOSDAQ": 221}
KEPT_GROUPS = frozenset({"ST", "EF"})  # shares and ETFs (not ELWs, REITs' rights, ...)
HEAD = 21  # short code (9) + ISIN (12)


class Listed(NamedTuple):
    code: str
    name: str
    market: str  # "KOSPI" or "KOSDAQ"
    group: str  # "ST", "EF", ...


def parse_master(data: bytes, market: str) -> tuple[list[Listed], int]:
    """The kept rows of one ``.mst`` file, and how many lines were unreadable."""
    tail = TAIL[market]
    out: list[Listed] = []
    bad = 0
    for line in data.decode("cp949", errors="replace").splitlines():
        if not line.strip():
            continue
        if len(line) < HEAD + tail:
            bad += 1
            continue
        code = line[:9].strip()
        name = line[HEAD : len(line) - tail].strip()
        group = line[len(line) - tail : len(line) - tail + 2]
        if len(code) != 6 or not code.isalnum() or not name:
            bad += 1
            continue
        if group in KEPT_GROUPS:
            out.append(Listed(code, name, market, group))
    return out, bad


def mst_from_zip(blob: bytes, market: str) -> bytes:
    with zipfile.ZipFile(io.BytesIO(blob)) as z:
        return z.read(f"{FILES[market]}.mst")


def master_zip(rows: Iterable[Listed], market: str) -> bytes:
    """A ``<name>.mst.zip`` as the broker serves it, for `rows` of `market` (the simulator)."""
    tail = TAIL[market]
    lines = []
    for r in rows:
        fixed = (r.group + "0" * (tail - 2))[:tail]
        lines.append(f"{r.code:<9}KR7{r.code}00{r.code[-1]}{r.name:<40}{fixed}")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr(f"{FILES[market]}.mst", ("\n".join(lines) + "\n").encode("cp949"))
    return buf.getvalue()


async def fetch_masters(http: httpx.AsyncClient, base_url: str) -> list[Listed]:
    """Download and parse both markets' master files; FeedError if either fails."""
    out: list[Listed] = []
    for market, name in FILES.items():
        url = f"{base_url.rstrip('/')}/{name}.mst.zip"
        try:
            resp = await http.get(url)
            if resp.status_code != 200:
                raise FeedError(f"GET {url}: HTTP {resp.status_code}")
            rows, bad = parse_master(mst_from_zip(resp.content, market), market)
        except (httpx.HTTPError, zipfile.BadZipFile, KeyError) as exc:
            raise FeedError(f"GET {url}: {exc!r}"[:300]) from None
        if bad:
            log.warning("stock master %s: %d unreadable lines skipped", name, bad)
        out += rows
    return out
