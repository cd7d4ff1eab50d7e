"""The MQTT link's in-flight tracker: which rows are on their way to the broker, and when a
row counts as delivered (every message of it acknowledged) or refused."""

from __future__ import annotations

import queue
import random
import threading

from hubd.radio.mqtt_inflight import InFlight


def publish(tracker: InFlight, row: int, mids: list[int]) -> None:
    tracker.open(row)
    for mid in mids:
        tracker.sent(mid, row)
    tracker.seal(row)


def test_a_row_is_delivered_only_when_sealed_and_every_message_is_acknowledged() -> None:
    t = InFlight(window=5)
    t.open(1)
    t.sent(10, 1)
    assert t.acked(10) is True
    assert not t.settled(), "an unsealed row (more messages to come) is not delivered"
    t.sent(11, 1)
    t.seal(1)
    assert not t.settled(), "message 11 is not acknowledged yet"
    assert t.in_flight() == 1
    assert t.acked(11) is True
    assert t.settled().delivered == [1] and t.settled().refused == []
    assert t.in_flight() == 0


def test_a_refused_message_refuses_its_row_with_the_reason() -> None:
    t = InFlight(window=5)
    publish(t, 1, [10, 11])
    t.acked(10)
    t.acked(11, "Not authorized")
    assert t.settled().delivered == []
    assert t.settled().refused == [(1, "broker refused: Not authorized")]


def test_a_message_paho_would_not_take_refuses_its_row() -> None:
    t = InFlight(window=5)
    t.open(1)
    t.sent(10, 1)
    t.refused(1, "payload too large")
    t.seal(1)
    t.acked(10)
    assert t.settled().refused == [(1, "payload too large")]


def test_a_puback_that_comes_before_publish_returns_is_kept_for_its_row() -> None:
    # paho may read the PUBACK (in its network thread) before publish() has returned the mid.
    t = InFlight(window=5)
    t.open(1)
    assert t.acked(10) is False  # not known yet: kept
    t.sent(10, 1)
    t.seal(1)
    assert t.settled().delivered == [1]

    t.open(2)
    t.acked(20, "Quota exceeded")
    t.sent(20, 2)
    t.seal(2)
    assert t.settled().refused == [(2, "broker refused: Quota exceeded")]


def test_messages_of_no_row_are_tracked_without_touching_rows() -> None:
    t = InFlight(window=5)
    t.sent(7)  # a status or a reply
    publish(t, 1, [8])
    assert t.acked(7) is False
    assert t.acked(8) is True
    assert t.settled().delivered == [1]


def test_a_mid_can_be_reused_once_acknowledged() -> None:
    # paho's mids wrap at 65535: a number acknowledged once names a new message next time.
    t = InFlight(window=5)
    publish(t, 1, [42])
    t.acked(42)
    publish(t, 2, [42])
    assert t.settled().delivered == [1], "row 2's message is not acknowledged yet"
    t.acked(42)
    assert t.settled().delivered == [1, 2]


def test_settled_rows_stay_busy_until_the_store_has_recorded_them() -> None:
    t = InFlight(window=3)
    publish(t, 1, [1])
    publish(t, 2, [2])
    assert t.window() == (1, {1, 2})
    t.acked(1)
    assert t.window() == (2, {1, 2}), "row 1 is settled: room again, but still busy"
    snapshot = t.settled()
    t.acked(2)  # settles while the store records the snapshot
    t.recorded(snapshot)
    assert t.window() == (3, {2}), "row 2 settled after the snapshot: still busy"
    assert t.settled().delivered == [2] and t.settled_count() == 1
    t.recorded(t.settled())
    assert t.window() == (3, set()) and t.settled_count() == 0


def test_the_window_follows_the_brokers_receive_maximum() -> None:
    t = InFlight(window=20)
    publish(t, 1, [1])
    t.resize(4)
    assert t.window()[0] == 3


def test_many_rows_across_threads_with_early_pubacks_settle_exactly_once() -> None:
    # The publisher hands each mid to the "network thread" before recording it, as paho can.
    t = InFlight(window=10_000)
    acks: queue.SimpleQueue[int | None] = queue.SimpleQueue()
    rng = random.Random(7)
    rows = range(1, 2001)

    def network() -> None:
        while (mid := acks.get()) is not None:
            t.acked(mid, "refused" if mid % 997 == 0 else None)

    worker = threading.Thread(target=network)
    worker.start()
    mid = 0
    for row in rows:
        t.open(row)
        for _ in range(rng.randint(1, 3)):
            mid += 1
            acks.put(mid)
            t.sent(mid, row)
        t.seal(row)
    acks.put(None)
    worker.join(10)
    settled = t.settled()
    refused = {r for r, _ in settled.refused}
    assert sorted(settled.delivered + sorted(refused)) == list(rows)
    assert len(settled.delivered) + len(settled.refused) == len(rows)
    assert refused and all(reason == "broker refused: refused" for _, reason in settled.refused)
    assert t.in_flight() == 0
