"""The served fan-out benchmark (the service and the peer as processes of their own, the
upstream and the clients too) runs end to end at a tiny size and reports its figures."""

from __future__ import annotations

import trio

from tradestream.bench import floor, served


async def test_served_tiny_run_reports_tradestream_and_the_peer() -> None:
    with trio.fail_after(120):
        result = await served.main(
            clients=50,
            topics_per_client=1,
            rate=100.0,
            duration_s=1.0,
            warmup_s=0.5,
            client_procs=1,
            kinds=("tradestream", "peer"),
        )
    for kind in ("tradestream", "peer"):
        run = result[kind]
        assert isinstance(run, dict)
        assert run["trades_per_s"] > 0, run
        # every code has one subscriber: a trade sent in the window is one expected delivery
        assert run["deliveries_expected"] == round(run["trades_per_s"] * 1.0), run
        assert run["deliveries"] > 0, run
        assert run["latency_ms_p50"] <= run["latency_ms_p99"] <= run["latency_ms_max"], run
        assert run["server_cpu_us_per_delivery"] > 0 and run["server_peak_rss_mb"] > 0, run
        assert "client_errors" not in run, run["client_errors"]
        # the row watcher saw the window's trades stored (the service drains before it stops)
        assert run["trades_sent"] > 0 and run["stored_of_sent"] == 1.0, run
        assert 0 < run["row_visible_ms_p50"] <= run["row_visible_ms_p99"], run
        if kind == "tradestream":  # the status endpoint's count over the window
            assert isinstance(run["conflated"], int) and run["conflated"] >= 0, run
        else:
            assert run["conflated"] is None, run
    lag = result["tradestream"]["intake_lag_ms"]  # type: ignore[index]
    assert lag["samples"] > 0 and lag["p50"] <= lag["p99"] <= lag["max"], lag
    assert result["peer"]["intake_lag_ms"] is None  # type: ignore[index]
    ratios = result["ratio_tradestream_vs_peer"]
    assert isinstance(ratios, dict)
    assert set(ratios) == {
        "deliveries",
        "latency_ms_p99",
        "server_cpu_us_per_delivery",
        "server_cpu_us_per_row",
        "row_visible_ms_p99",
    }


async def test_served_ingest_without_clients_into_postgresql() -> None:
    """The ingest scenario's shape at a tiny size: no clients, PostgreSQL scratch databases,
    several records per frame; storage figures only."""
    with trio.fail_after(120):
        result = await served.main(
            clients=0,
            rate=200.0,
            duration_s=1.0,
            warmup_s=0.5,
            kinds=("tradestream", "peer"),
            backend="postgresql",
            records=5,
        )
    for kind in ("tradestream", "peer"):
        run = result[kind]
        assert isinstance(run, dict)
        assert "deliveries" not in run and "latency_ms_p99" not in run, run
        assert run["trades_sent"] > 0 and run["rows_stored"] == run["trades_sent"], run
        assert run["server_cpu_us_per_row"] > 0, run
    assert set(result["ratio_tradestream_vs_peer"]) == {  # type: ignore[arg-type]
        "server_cpu_us_per_row",
        "row_visible_ms_p99",
    }


async def test_floor_reports_every_client_kind() -> None:
    out = await floor.main(rate=2000.0, duration_s=0.3, warmup_frames=100)
    for kind in floor.KINDS:
        r = out[kind]
        assert isinstance(r, dict)
        assert r["frames"] >= 100, (kind, r)  # about 600 at 2,000 frames/s over 0.3 s
        assert r["cpu_us_per_frame"] > 0, (kind, r)


async def test_upstream_control_mode_counts_what_it_wrote_pauses_and_drops() -> None:
    import json
    import sys

    from trio_websocket import ConnectionClosed

    from tradestream.bench.clients import read_line
    from tradestream.bench.served import _start
    from tradestream.feeds.kis.codec import subscribe_message
    from tradestream.feeds.transport import open_upstream

    up = await _start(
        [sys.executable, "-m", "tradestream.bench.upstream", "2000", "1", "--control"]
    )
    buf = bytearray()
    assert up.stdin is not None and up.stdout is not None

    async def command(cmd: str) -> dict[str, int]:
        assert up.stdin is not None and up.stdout is not None
        await up.stdin.send_all(cmd.encode() + b"\n")
        answer: dict[str, int] = json.loads(await read_line(up.stdout, buf))
        return answer

    try:
        with trio.fail_after(60):
            _, _, ws_port = (await read_line(up.stdout, buf)).decode().split()
            async with open_upstream(f"ws://127.0.0.1:{ws_port}/", 5) as ws:
                await ws.send_message(subscribe_message("k", "H0STCNT0", "005930"))
                received = 0
                while received < 20:
                    if (await ws.get_message()).startswith("0|"):
                        received += 1
                paused = await command("pause")
                assert paused["written"] >= received
                # read until quiet: every record written onto the socket has arrived
                with trio.move_on_after(1.0):
                    while True:
                        if (await ws.get_message()).startswith("0|"):
                            received += 1
                written = (await command("count"))["written"]
                assert received == written >= paused["written"]
                await command("drop")
                try:
                    while True:
                        await ws.get_message()
                except ConnectionClosed as exc:
                    assert exc.reason is not None and exc.reason.code == 1001
    finally:
        up.kill()
        await up.wait()
