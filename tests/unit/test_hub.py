"""Hub and Outbox: fan-out without awaiting, conflation, and the slow-consumer bound."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from tradestream.hub import (
    CloseRequest,
    Hub,
    Msg,
    Outbox,
    run_heartbeat,
)
from tradestream.wire import CLOSE_GOING_AWAY, CLOSE_HEARTBEAT, CLOSE_SLOW_CONSUMER


def M(text: str) -> Msg:  # noqa: N802
    return Msg(text, "price_update")


def texts(batch: object) -> list[str]:
    assert isinstance(batch, list)
    return [m.payload for m in batch]


async def test_outbox_conflates_latest_per_topic_and_keeps_order() -> None:
    box = Outbox(max_lossless=10)
    box.put(M("reply-1"))
    box.put_latest("price:A", M("A1"))
    box.put_latest("price:B", M("B1"))
    box.put_latest("price:A", M("A2"))  # replaces A1 in place, keeps A's place in the queue
    box.put(M("reply-2"))
    assert texts(await box.get_batch(100)) == ["reply-1", "A2", "B1", "reply-2"]
    assert box.conflated == 1
    assert box.sent == 4


async def test_outbox_batch_limit_takes_oldest_first() -> None:
    box = Outbox(max_lossless=10)
    for i in range(5):
        box.put(M(str(i)))
    assert texts(await box.get_batch(2)) == ["0", "1"]
    assert texts(await box.get_batch(10)) == ["2", "3", "4"]


async def test_lossless_overflow_closes_slow_consumer_and_drops_queue() -> None:
    box = Outbox(max_lossless=3)
    for i in range(4):
        box.put(M(str(i)))
    assert box.close_request == CloseRequest(CLOSE_SLOW_CONSUMER, "slow consumer")
    assert len(box) == 0
    assert await box.get_batch(10) == CloseRequest(CLOSE_SLOW_CONSUMER, "slow consumer")
    box.put(M("after"))  # ignored once closing
    assert len(box) == 0


async def test_conflated_messages_never_overflow() -> None:
    box = Outbox(max_lossless=2)
    for i in range(10_000):
        box.put_latest(f"price:{i % 50}", M(str(i)))
    assert box.close_request is None
    batch = await box.get_batch(1000)
    assert isinstance(batch, list) and len(batch) == 50
    assert batch[0].payload == "9950"


async def test_get_batch_waits_until_something_arrives(autojump_clock: trio.abc.Clock) -> None:
    box = Outbox(max_lossless=10)
    got: list[object] = []

    async def reader() -> None:
        got.append(await box.get_batch(10))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(reader)
        await trio.testing.wait_all_tasks_blocked()
        assert got == []
        box.put(M("x"))
    assert [texts(b) for b in got] == [["x"]]


async def test_hub_publish_reaches_only_subscribers() -> None:
    hub = Hub(outbox_max=10)
    a, b = hub.connect("u1"), hub.connect("u2")
    assert hub.subscribe(a, "price:005930")
    assert not hub.subscribe(a, "price:005930")
    hub.subscribe(b, "price:000660")
    assert hub.publish_latest("price:005930", M("p1")) == 1
    assert hub.publish_latest("price:035420", M("nobody")) == 0
    assert texts(await a.outbox.get_batch(10)) == ["p1"]
    assert len(b.outbox) == 0
    assert hub.subscriptions() == {"price:005930": 1, "price:000660": 1}
    assert hub.delivered == {"price_update": 1}


async def test_hub_disconnect_removes_subscriptions_and_close_all() -> None:
    hub = Hub()
    a = hub.connect("u1")
    hub.subscribe(a, "price:005930")
    hub.close_all()
    assert await a.outbox.get_batch(1) == CloseRequest(CLOSE_GOING_AWAY, "server shutdown")
    hub.disconnect(a)
    assert not hub.has_subscribers("price:005930")
    assert hub.clients == {}
    with trio.move_on_after(1) as scope:
        await hub.wait_empty()
    assert not scope.cancelled_caught


async def test_heartbeat_pings_and_closes_a_silent_client(autojump_clock: trio.abc.Clock) -> None:
    hub = Hub()
    client = hub.connect("u1")
    sent: list[float] = []
    t0 = trio.current_time()

    def ping() -> Msg:
        sent.append(trio.current_time() - t0)
        return M("ping")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run_heartbeat, client, 30.0, 2, ping)
        await trio.sleep(31)
        assert sent == [30.0]
        client.unanswered_pings = 0  # the client's pong
        await trio.sleep(60)  # two pings unanswered: 60 s, 90 s
    # the task returned by itself when it closed the client, at 120 s
    assert sent == [30.0, 60.0, 90.0]
    assert trio.current_time() - t0 == 120.0
    assert client.outbox.close_request == CloseRequest(CLOSE_HEARTBEAT, "no pong to 2 pings")


async def test_cadence_delivers_at_most_one_latest_per_period(
    autojump_clock: trio.abc.Clock,
) -> None:
    hub = Hub()
    fast, slow = hub.connect("u1"), hub.connect("u2")
    hub.subscribe(fast, "price:005930")
    assert hub.subscribe(slow, "price:005930", key="price:005930@1s", period=1.0)
    assert hub.subscriptions() == {"price:005930": 1, "price:005930@1s": 1}
    got: list[tuple[float, list[str]]] = []
    t0 = trio.current_time()

    async def read_slow() -> None:
        while True:
            batch = await slow.outbox.get_batch(10)
            got.append((trio.current_time() - t0, texts(batch)))

    async with trio.open_nursery() as nursery:
        await nursery.start(hub.run_cadence)
        nursery.start_soon(read_slow)
        await trio.sleep(0.05)  # publish between period boundaries: no ties
        for i in range(25):  # 10 updates/s for 2.5 s
            hub.publish_latest("price:005930", M(f"p{i}"))
            await trio.sleep(0.1)
        await trio.sleep(1.0)  # nothing new: no further delivery
        nursery.cancel_scope.cancel()
    # the direct subscriber gets every update (it reads nothing here: conflated to the last)
    assert texts(await fast.outbox.get_batch(100)) == ["p24"]
    # the cadenced one: the latest at each 1 s boundary, nothing when nothing changed
    assert got == [(1.0, ["p9"]), (2.0, ["p19"]), (3.0, ["p24"])]


async def test_cadence_groups_start_and_stop_with_their_subscribers(
    autojump_clock: trio.abc.Clock,
) -> None:
    hub = Hub()
    a = hub.connect("u1")
    assert not hub.has_subscribers("price:005930")
    hub.subscribe(a, "price:005930", key="price:005930@5s", period=5.0)
    assert hub.has_subscribers("price:005930")  # so the router encodes for it
    assert hub.unsubscribe(a, "price:005930@5s")
    assert not hub.has_subscribers("price:005930")
    assert hub.subscriptions() == {}
    hub.subscribe(a, "price:005930", key="price:005930@5s", period=5.0)
    hub.disconnect(a)
    assert not hub.has_subscribers("price:005930")


async def test_per_user_connection_counts() -> None:
    hub = Hub()
    a, b, c = hub.connect("u1"), hub.connect("u1"), hub.connect("u2")
    assert (hub.connections_of("u1"), hub.connections_of("u2")) == (2, 1)
    hub.disconnect(a)
    hub.disconnect(c)
    hub.disconnect(c)  # twice is harmless
    assert (hub.connections_of("u1"), hub.connections_of("u2")) == (1, 0)
    assert list(hub.users()) == ["u1"]
    del b


# -- the direct path: a message that finds nothing queued is offered to the socket first ------


def test_text_frames_parse_as_websocket_frames_of_every_length_class() -> None:
    from wsproto.frame_protocol import FrameProtocol, Opcode

    from tradestream.hub import text_frame

    for n in (0, 125, 126, 65_535, 65_536, 200_000):
        payload = ("é" * (n // 2) + "x" * (n % 2)).encode()
        parser = FrameProtocol(client=True, extensions=[])
        parser.receive_bytes(text_frame(payload))
        (frame,) = list(parser.received_frames())
        assert frame.opcode is Opcode.TEXT and frame.frame_finished and frame.message_finished
        assert frame.payload == payload.decode()


def test_msg_frame_is_built_once_and_shared() -> None:
    m = Msg('{"type":"alert"}', "alert")
    assert m.frame is m.frame and m.frame.endswith(b'{"type":"alert"}')


async def test_outbox_offers_to_the_direct_path_only_with_nothing_queued() -> None:
    box = Outbox(max_lossless=10)
    taken: list[str] = []
    accept = True

    def direct(msg: Msg) -> bool:
        if accept:
            taken.append(msg.payload)
        return accept

    box.direct = direct
    box.put(M("a"))
    box.put_latest("price:1", M("p1"))
    assert taken == ["a", "p1"] and len(box) == 0 and box.direct_sent == 2
    accept = False  # the socket is busy: queue, in order
    box.put(M("b"))
    accept = True
    box.put(M("c"))  # "b" is queued: "c" must not overtake it
    box.put_latest("price:1", M("p2"))
    assert taken == ["a", "p1"]
    assert [m.payload for m in await box.get_batch(10)] == ["b", "c", "p2"]
    box.put(M("d"))  # nothing queued again: direct
    assert taken == ["a", "p1", "d"]


async def test_wake_returns_an_empty_batch_so_the_sender_finishes_a_direct_write() -> None:
    box = Outbox(max_lossless=10)
    box.wake()
    with trio.fail_after(1):
        assert await box.get_batch(10) == []
    box.put(M("x"))
    assert [m.payload for m in await box.get_batch(10)] == ["x"]


async def test_the_coalescer_writes_a_burst_as_one_batch_per_client_once_the_publisher_yields(
    nursery: trio.Nursery,
) -> None:
    hub = Hub()
    await nursery.start(hub.run_coalescer)
    writable = True
    written: dict[int, list[list[str]]] = {}
    clients = [hub.connect(f"u{i}", batch=True) for i in range(3)]
    for c in clients:
        hub.subscribe(c, "alert")
        c.outbox.can_write_now = lambda: writable
        c.outbox.coalesce = lambda batch, cid=c.id: written.setdefault(cid, []).append(
            [m.payload for m in batch]
        )
        c.outbox.schedule = hub.schedule_flush
    for i in range(4):  # one burst: nothing yields in between
        hub.publish("alert", M(f"a{i}"))
    assert written == {}  # nothing is written while the publisher still runs
    await trio.testing.wait_all_tasks_blocked()
    assert written == {c.id: [["a0", "a1", "a2", "a3"]] for c in clients}
    assert all(len(c.outbox) == 0 for c in clients)
    writable = False  # a write in progress: the senders take it from their queues
    hub.publish("alert", M("b"))
    await trio.testing.wait_all_tasks_blocked()
    assert all(len(written[c.id]) == 1 for c in clients)  # not written by the coalescer
    for c in clients:  # the sender was woken: it finds the message queued
        with trio.fail_after(1):
            batch = await c.outbox.get_batch(10)
        assert isinstance(batch, list) and [m.payload for m in batch] == ["b"]


async def test_the_write_delay_puts_a_clients_messages_of_a_window_in_one_frame_unconflated(
    autojump_clock: trio.abc.Clock, nursery: trio.Nursery
) -> None:
    hub = Hub()
    await nursery.start(hub.run_coalescer, 0.02)
    written: list[tuple[float, list[str]]] = []
    c = hub.connect("u", batch=True)
    hub.subscribe(c, "price:005930")
    hub.subscribe(c, "price:000660")
    c.outbox.can_write_now = lambda: True
    c.outbox.coalesce = lambda batch: written.append(
        (trio.current_time(), [m.payload for m in batch])
    )
    c.outbox.schedule = hub.schedule_flush
    t0 = trio.current_time()
    hub.publish_latest("price:005930", M("s1"))
    await trio.sleep(0.005)
    hub.publish_latest("price:000660", M("h1"))
    await trio.sleep(0.005)
    hub.publish_latest("price:005930", M("s2"))  # same topic, same window: kept, in order
    await trio.sleep(0.005)
    assert written == []  # the window (20 ms from the first message) is still open
    await trio.sleep(0.01)
    assert [b for _, b in written] == [["s1", "s2", "h1"]]
    assert written[0][0] == pytest.approx(t0 + 0.02)
    assert c.outbox.conflated == 0
    t1 = trio.current_time()
    hub.publish_latest("price:005930", M("s3"))  # a new window starts with it
    await trio.sleep(0.03)
    assert [b for _, b in written[1:]] == [["s3"]]
    assert written[1][0] == pytest.approx(t1 + 0.02)


async def test_once_the_socket_is_busy_a_batch_clients_prices_conflate_again(
    autojump_clock: trio.abc.Clock, nursery: trio.Nursery
) -> None:
    hub = Hub()
    await nursery.start(hub.run_coalescer, 0.02)
    c = hub.connect("u", batch=True)
    hub.subscribe(c, "price:005930")
    c.outbox.can_write_now = lambda: False  # a write in progress: the sender takes over
    c.outbox.coalesce = lambda batch: None
    c.outbox.schedule = hub.schedule_flush
    hub.publish_latest("price:005930", M("s1"))
    hub.publish_latest("price:005930", M("s2"))
    await trio.sleep(0.03)  # the coalescer found the socket busy and woke the sender
    hub.publish_latest("price:005930", M("s3"))  # behind now: replaces what is queued
    hub.publish_latest("price:005930", M("s4"))
    batch = await c.outbox.get_batch(10)
    assert isinstance(batch, list) and [m.payload for m in batch] == ["s4"]
    assert c.outbox.conflated == 3


async def test_a_close_during_the_write_delay_counts_every_held_update_as_discarded(
    autojump_clock: trio.abc.Clock, nursery: trio.Nursery
) -> None:
    hub = Hub()
    await nursery.start(hub.run_coalescer, 0.02)
    c = hub.connect("u", batch=True)
    hub.subscribe(c, "price:005930")
    c.outbox.can_write_now = lambda: True
    c.outbox.coalesce = lambda batch: None
    c.outbox.schedule = hub.schedule_flush
    for i in range(3):  # three updates of one topic held in order within the delay
        hub.publish_latest("price:005930", M(f"s{i}"))
    c.outbox.close(CLOSE_GOING_AWAY, "bye")
    assert c.outbox.discarded == 3
