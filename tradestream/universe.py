"""The demo universe: 50 real KRX codes with names, round prior closes and their market
(bottom layer: pure data). The simulator trades them; the default watchlist streams them."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SimTicker:
    code: str
    name: str
    base_price: int  # the prior close the simulation starts from
    market: str = "KOSPI"  # "KOSPI" or "KOSDAQ": which index (SIM_INDEXES) it moves


# The KOSDAQ-listed codes among DEFAULT_TICKERS (the last six); the others are on KOSPI.
KOSDAQ_CODES = frozenset({"247540", "086520", "196170", "028300", "263750", "293490"})

# Real KRX codes (KOSPI, and a few KOSDAQ at the end) with round, plausible prices.
DEFAULT_TICKERS: tuple[SimTicker, ...] = tuple(
    SimTicker(c, n, p, "KOSDAQ" if c in KOSDAQ_CODES else "KOSPI")
    for c, n, p in (
        ("005930", "Samsung Electronics", 71000), ("000660", "SK hynix", 180000),
        ("035420", "NAVER", 190000), ("005380", "Hyundai Motor", 240000),
        ("000270", "Kia", 95000), ("051910", "LG Chem", 350000),
        ("006400", "Samsung SDI", 380000), ("035720", "Kakao", 45000),
        ("207940", "Samsung Biologics", 800000), ("068270", "Celltrion", 180000),
        ("005490", "POSCO Holdings", 400000), ("105560", "KB Financial", 70000),
        ("055550", "Shinhan Financial", 45000), ("012330", "Hyundai Mobis", 230000),
        ("028260", "Samsung C&T", 140000), ("066570", "LG Electronics", 95000),
        ("003550", "LG Corp", 80000), ("034730", "SK Inc", 170000),
        ("015760", "KEPCO", 21000), ("017670", "SK Telecom", 52000),
        ("030200", "KT", 36000), ("032830", "Samsung Life", 80000),
        ("086790", "Hana Financial", 55000), ("096770", "SK Innovation", 120000),
        ("009150", "Samsung Electro-Mechanics", 150000), ("018260", "Samsung SDS", 160000),
        ("011200", "HMM", 18000), ("010130", "Korea Zinc", 500000),
        ("036570", "NCSoft", 200000), ("251270", "Netmarble", 50000),
        ("090430", "Amorepacific", 130000), ("033780", "KT&G", 90000),
        ("010950", "S-Oil", 70000), ("003670", "POSCO Future M", 300000),
        ("373220", "LG Energy Solution", 400000), ("329180", "HD Hyundai Heavy", 150000),
        ("009540", "HD Korea Shipbuilding", 120000), ("042660", "Hanwha Ocean", 30000),
        ("012450", "Hanwha Aerospace", 250000), ("047810", "Korea Aerospace", 50000),
        ("323410", "KakaoBank", 25000), ("377300", "KakaoPay", 40000),
        ("259960", "Krafton", 250000), ("352820", "HYBE", 200000),
        ("247540", "EcoPro BM", 200000), ("086520", "EcoPro", 100000),
        ("196170", "Alteogen", 300000), ("028300", "HLB", 60000),
        ("263750", "Pearl Abyss", 35000), ("293490", "Kakao Games", 20000),
    )
)  # fmt: skip
