"""HttpPositions and run_positions_sync against a real loopback HTTP server: a body trickled
byte by byte is cut off by the fetch deadline (httpx's timeout is per read), and one client
(one kept-alive connection) serves every fetch."""

from __future__ import annotations

from functools import partial

import trio

from tradestream.accounts import AccountBook, HttpPositions, SyncStats, run_positions_sync

BODY = (
    b'{"accounts": [{"account": "5012345601", "positions": ['
    b'{"code": "005930", "quantity": 3, "avg_price": 70000}]}]}'
)


def response(body: bytes) -> bytes:
    return (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n" % len(body)
    ) + body


async def serve(handler: object, nursery: trio.Nursery) -> str:
    listeners = await nursery.start(partial(trio.serve_tcp, handler, 0, host="127.0.0.1"))
    return f"http://127.0.0.1:{listeners[0].socket.getsockname()[1]}/sim/positions"


async def test_a_trickled_body_is_bounded_by_the_fetch_deadline(nursery: trio.Nursery) -> None:
    async def trickle(stream: trio.SocketStream) -> None:
        await stream.receive_some(65536)
        data = response(BODY)
        await stream.send_all(data[:60])
        for i in range(60, len(data)):  # one byte every 0.2 s: each read is within 1 s
            await trio.sleep(0.2)
            await stream.send_all(data[i : i + 1])

    url = await serve(trickle, nursery)
    stats = SyncStats()
    with trio.fail_after(10):
        t0 = trio.current_time()
        await nursery.start(
            partial(
                run_positions_sync,
                HttpPositions(url, 1.0),
                AccountBook(),
                lambda: None,
                60.0,
                stats,
                fetch_timeout_s=1.5,
            )
        )
        took = trio.current_time() - t0
    assert 1.4 < took < 4.0  # the body alone takes ~20 s
    assert stats.failures == 1 and stats.last_error == "no answer within 1.5s"


async def test_one_client_and_connection_for_every_fetch(nursery: trio.Nursery) -> None:
    connections = 0

    async def keep_alive(stream: trio.SocketStream) -> None:
        nonlocal connections
        connections += 1
        while await stream.receive_some(65536):
            await stream.send_all(response(BODY))

    url = await serve(keep_alive, nursery)
    source = HttpPositions(url, 2.0)
    with trio.fail_after(10):
        for _ in range(3):
            got = await source.fetch()
            assert got["5012345601"]["005930"].quantity == 3
        await source.aclose()
    assert connections == 1
