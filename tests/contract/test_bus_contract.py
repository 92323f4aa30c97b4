"""The bus's Pub/Sub semantics, as a specification.

Runs against the embedded SQLite bus; the cloud suite drives the same
behaviours through the Pub/Sub emulator.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest

from common.adapters.local.clock import ManualClock
from common.adapters.local.sqlite_bus import OutgoingMessage, Settlement, SqliteBus, SubscriptionConfig
from common.core.errors import NotFound

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def bus(tmp_path: Path, clock: ManualClock) -> SqliteBus:
    b = SqliteBus(tmp_path / "bus.db", clock=clock, durable=False)
    for t in ("work", "work-dlq"):
        b.declare_topic(t)
    b.declare_subscription(
        SubscriptionConfig(
            "work-sub",
            "work",
            ack_deadline_s=60,
            max_delivery_attempts=3,
            min_backoff_s=10,
            max_backoff_s=600,
            dead_letter_topic="work-dlq",
        )
    )
    b.declare_subscription(SubscriptionConfig("dlq-sub", "work-dlq", max_delivery_attempts=5))
    return b


def test_a_published_message_is_delivered_once_with_attempt_one(bus: SqliteBus) -> None:
    mid = bus.publish("work", b"hello", {"kind": "k"})
    (d,) = bus.pull("work-sub", 10)
    assert (d.message_id, d.data, d.attributes, d.attempt) == (mid, b"hello", {"kind": "k"}, 1)
    assert bus.pull("work-sub", 10) == []


def test_an_acked_message_never_comes_back(bus: SqliteBus, clock: ManualClock) -> None:
    bus.publish("work", b"x", {})
    (d,) = bus.pull("work-sub", 10)
    bus.ack(d)
    clock.advance(3600)
    assert bus.pull("work-sub", 10) == []
    assert bus.depth("work-sub") == 0


def test_a_topic_fans_out_to_every_subscription(bus: SqliteBus) -> None:
    bus.declare_subscription(SubscriptionConfig("audit-sub", "work"))
    mid = bus.publish("work", b"x", {})
    assert [d.message_id for d in bus.pull("work-sub", 10)] == [mid]
    assert [d.message_id for d in bus.pull("audit-sub", 10)] == [mid]


def test_publishing_to_an_unknown_topic_is_refused(bus: SqliteBus) -> None:
    with pytest.raises(NotFound):
        bus.publish("nope", b"x", {})


def test_a_nacked_message_is_redelivered_after_exponential_backoff(bus: SqliteBus, clock: ManualClock) -> None:
    bus.publish("work", b"x", {})
    (d1,) = bus.pull("work-sub", 10)
    bus.nack(d1, error="boom")
    clock.advance(9.9)
    assert bus.pull("work-sub", 10) == [], "min_backoff_s is 10 s for the first retry"
    clock.advance(0.1)
    (d2,) = bus.pull("work-sub", 10)
    assert (d2.message_id, d2.attempt) == (d1.message_id, 2)
    bus.nack(d2)
    clock.advance(19.9)
    assert bus.pull("work-sub", 10) == [], "the second retry waits twice as long"
    clock.advance(0.1)
    assert bus.pull("work-sub", 10)[0].attempt == 3


def test_a_nack_can_name_its_own_delay(bus: SqliteBus, clock: ManualClock) -> None:
    bus.publish("work", b"x", {})
    (d,) = bus.pull("work-sub", 10)
    bus.nack(d, retry_after_s=120)
    clock.advance(119)
    assert bus.pull("work-sub", 10) == []
    clock.advance(1)
    assert len(bus.pull("work-sub", 10)) == 1


def test_an_expired_lease_redelivers_the_same_message(bus: SqliteBus, clock: ManualClock) -> None:
    mid = bus.publish("work", b"x", {})
    bus.pull("work-sub", 10)
    clock.advance(59)
    assert bus.pull("work-sub", 10) == [], "still leased"
    clock.advance(1)
    (d,) = bus.pull("work-sub", 10)
    assert (d.message_id, d.attempt) == (mid, 2)


def test_after_max_attempts_a_message_moves_to_the_dead_letter_topic(bus: SqliteBus, clock: ManualClock) -> None:
    mid = bus.publish("work", b"payload", {"kind": "k"})
    for _ in range(3):
        (d,) = bus.pull("work-sub", 10)
        bus.nack(d, retry_after_s=0, error="still broken")
    assert bus.pull("work-sub", 10) == []
    (dead,) = bus.pull("dlq-sub", 10)
    assert dead.data == b"payload"
    assert dead.attributes["CloudPubSubDeadLetterSourceDeliveryCount"] == "3"
    assert dead.attributes["sluice_error"] == "still broken"
    (record,) = bus.dead_letters("work-sub")
    assert (record.message_id, record.attempts, record.last_error) == (mid, 3, "still broken")


def test_a_message_whose_leases_keep_expiring_is_dead_lettered_too(bus: SqliteBus, clock: ManualClock) -> None:
    bus.publish("work", b"x", {})
    for _ in range(3):
        assert len(bus.pull("work-sub", 10)) == 1
        clock.advance(60)
    assert bus.pull("work-sub", 10) == []
    assert "ack deadline" in (bus.dead_letters()[0].last_error or "")


def test_a_dead_letter_can_be_replayed(bus: SqliteBus) -> None:
    bus.publish("work", b"x", {})
    (d,) = bus.pull("work-sub", 10)
    bus.settle([Settlement(d, ack=True, dead_letter=True, error="bad")])
    (record,) = bus.dead_letters("work-sub")
    bus.replay_dead_letter(record.seq)
    (again,) = bus.pull("work-sub", 10)
    assert again.data == b"x" and again.attempt == 1
    assert bus.dead_letters("work-sub")[0].replayed_at is not None


def test_delayed_delivery_waits_for_its_time(bus: SqliteBus, clock: ManualClock) -> None:
    bus.publish("work", b"later", {}, deliver_after=clock.now() + timedelta(minutes=5))
    assert bus.pull("work-sub", 10) == []
    assert bus.next_ready_at(["work-sub"]) == clock.now() + timedelta(minutes=5)
    clock.advance(300)
    assert [d.data for d in bus.pull("work-sub", 10)] == [b"later"]


def test_higher_priority_messages_are_delivered_first(bus: SqliteBus) -> None:
    bus.publish("work", b"low", {"priority_rank": "0"})
    bus.publish("work", b"urgent", {"priority_rank": "3"})
    bus.publish("work", b"normal", {"priority_rank": "1"})
    assert [d.data for d in bus.pull("work-sub", 10)] == [b"urgent", b"normal", b"low"]


def test_a_settlement_publishes_and_acks_atomically(bus: SqliteBus) -> None:
    bus.publish("work", b"step1", {})
    (d,) = bus.pull("work-sub", 10)
    bus.settle([Settlement(d, ack=True, publishes=[OutgoingMessage("work", b"step2", {})])])
    assert [x.data for x in bus.pull("work-sub", 10)] == [b"step2"]


def test_a_settlement_that_fails_publishes_nothing_and_acks_nothing(bus: SqliteBus, clock: ManualClock) -> None:
    bus.publish("work", b"step1", {})
    (d,) = bus.pull("work-sub", 10)
    with pytest.raises(NotFound):
        bus.settle([Settlement(d, ack=True, publishes=[OutgoingMessage("missing-topic", b"x", {})])])
    clock.advance(60)
    assert [x.data for x in bus.pull("work-sub", 10)] == [b"step1"], "still there, redelivered"


_CRASHER = textwrap.dedent(
    """
    import os, sys
    from common.adapters.local.clock import SystemClock
    from common.adapters.local.sqlite_bus import SqliteBus, SubscriptionConfig
    bus = SqliteBus(sys.argv[1], clock=SystemClock(), durable=True)
    bus.declare_topic("work")
    bus.declare_subscription(SubscriptionConfig("work-sub", "work", ack_deadline_s=600))
    for i in range(200):
        bus.publish("work", str(i).encode(), {})
    leased = bus.pull("work-sub", 50, owner="doomed")
    bus.ack(leased[0])
    print("ready", flush=True)
    sys.stdin.read()
    """
)


def test_messages_survive_kill_9_and_leases_of_the_dead_are_recovered(tmp_path: Path) -> None:
    db = tmp_path / "bus.db"
    proc = subprocess.Popen(
        [sys.executable, "-c", _CRASHER, str(db)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == b"ready"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()

    from common.adapters.local.clock import SystemClock

    bus = SqliteBus(db, clock=SystemClock())
    unleased = bus.pull("work-sub", 500, owner="survivor")
    assert len(unleased) == 150, "the 150 messages nobody had leased are deliverable at once"
    assert bus.release_leases(except_owner="survivor") == 49, "the dead process's 49 unacked leases"
    recovered = bus.pull("work-sub", 500, owner="survivor")
    assert {d.attempt for d in recovered} == {2}
    seen = [d.data for d in unleased + recovered]
    assert sorted(seen) == sorted(str(i).encode() for i in range(1, 200)), "all but the acked one, once each"


def test_releasing_one_owners_leases_leaves_the_others_leased(bus: SqliteBus) -> None:
    """A supervisor's child died: its deliveries are ready again at once, its siblings' stay theirs."""
    for i in range(6):
        bus.publish("work", str(i).encode(), {})
    dead = bus.pull("work-sub", 2, owner="dead")
    alive = bus.pull("work-sub", 3, owner="alive")
    assert bus.release_leases(owner="dead") == 2
    again = bus.pull("work-sub", 10, owner="next")
    assert sorted(d.data for d in again) == sorted([d.data for d in dead] + [b"5"])
    assert {d.attempt for d in again if d.data != b"5"} == {2}
    assert bus.release_leases(owner="dead") == 0
    assert bus.release_leases(owner="alive") == len(alive)


def test_concurrent_writers_commit_together_and_each_gets_its_own_outcome(bus: SqliteBus, clock: ManualClock) -> None:
    """Group commit: writes queued behind a commit in progress are committed by
    one transaction, and one writer's failure rolls back only its own writes."""
    for i in range(20):
        bus.publish("work", f"step1-{i}".encode(), {})
    deliveries = sorted(bus.pull("work-sub", 20), key=lambda d: d.data)
    assert len(deliveries) == 20

    in_commit, release = threading.Event(), threading.Event()

    def slow_write(conn: object) -> None:
        in_commit.set()
        release.wait(10)

    holder = threading.Thread(target=bus._write, args=(slow_write,))
    holder.start()
    assert in_commit.wait(10)
    barrier = threading.Barrier(20)
    outcomes: dict[int, str] = {}

    def writer(i: int) -> None:
        topic = "missing-topic" if i == 0 else "work"
        settlement = Settlement(deliveries[i], ack=True, publishes=[OutgoingMessage(topic, f"step2-{i}".encode(), {})])
        barrier.wait()
        try:
            bus.settle([settlement])
            outcomes[i] = "ok"
        except NotFound:
            outcomes[i] = "not found"

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    while len(bus._pending) < 20:  # every writer is queued behind the commit in progress
        time.sleep(0.001)
    release.set()
    for t in [holder, *threads]:
        t.join(10)

    assert outcomes == {0: "not found", **{i: "ok" for i in range(1, 20)}}
    clock.advance(61)  # past the ack deadline: only the failed settlement's delivery comes back
    redelivered = sorted(d.data for d in bus.pull("work-sub", 100))
    assert redelivered == sorted([deliveries[0].data] + [f"step2-{i}".encode() for i in range(1, 20)])


def test_queued_writes_run_in_one_transaction_on_one_thread(bus: SqliteBus) -> None:
    in_commit, release = threading.Event(), threading.Event()
    ran_on: list[tuple[int, int]] = []

    def slow_write(conn: object) -> None:
        in_commit.set()
        release.wait(10)

    def note(conn: sqlite3.Connection) -> None:
        # which thread and connection ran it: the one leader that took the queue
        ran_on.append((threading.get_ident(), id(conn)))

    holder = threading.Thread(target=bus._write, args=(slow_write,))
    holder.start()
    assert in_commit.wait(10)
    threads = [threading.Thread(target=bus._write, args=(note,)) for _ in range(10)]
    for t in threads:
        t.start()
    while len(bus._pending) < 10:
        time.sleep(0.001)
    release.set()
    for t in [holder, *threads]:
        t.join(10)
    assert len(ran_on) == 10
    assert len(set(ran_on)) == 1, "one leader ran every queued write"


def _statements(bus: SqliteBus) -> list[str]:
    """Every statement this thread's connections of ``bus`` run from now on (first word)."""
    seen: list[str] = []
    for sync in (True, False):
        bus._conn(sync=sync).set_trace_callback(lambda sql: seen.append(sql.split(None, 1)[0].upper()))
    return seen


def test_an_exchange_settles_and_leases_in_one_transaction_including_what_it_published(
    bus: SqliteBus, clock: ManualClock
) -> None:
    for i in range(3):
        bus.publish("work", f"step1-{i}".encode(), {})
    step1 = bus.pull("work-sub", 10)
    done = [Settlement(d, ack=True, publishes=[OutgoingMessage("work", b"step2" + d.data[5:], {})]) for d in step1]
    statements = _statements(bus)

    out = bus.exchange(done, {"work-sub": 10}, owner="me")

    assert out.settle_error is None
    assert sorted(d.data for d in out.deliveries["work-sub"]) == [b"step2-0", b"step2-1", b"step2-2"]
    assert all(d.attempt == 1 for d in out.deliveries["work-sub"])
    assert statements.count("BEGIN") == 1 and statements.count("COMMIT") == 1
    clock.advance(61)  # the step-1 messages were acked: only the leased step-2 ones come back
    assert sorted(d.data for d in bus.pull("work-sub", 10)) == [b"step2-0", b"step2-1", b"step2-2"]


def test_an_exchange_whose_settlements_fail_still_leases_and_keeps_those_deliveries_leased(
    bus: SqliteBus, clock: ManualClock
) -> None:
    bus.publish("work", b"step1", {})
    (d,) = bus.pull("work-sub", 10)
    bus.publish("work", b"other", {})
    bad = Settlement(d, ack=True, publishes=[OutgoingMessage("missing-topic", b"x", {})])

    out = bus.exchange([bad], {"work-sub": 10})

    assert isinstance(out.settle_error, NotFound)
    assert [x.data for x in out.deliveries["work-sub"]] == [b"other"]
    assert bus.pull("work-sub", 10) == []
    clock.advance(61)
    assert sorted(x.data for x in bus.pull("work-sub", 10)) == [b"other", b"step1"], "neither was acked"


def test_twenty_concurrent_exchanges_settle_each_delivery_once_and_lease_each_message_once(
    bus: SqliteBus, clock: ManualClock
) -> None:
    """20 threads at a barrier, queued behind one commit so they share a
    transaction: every settlement lands exactly once and no message is leased
    by two of them."""
    for i in range(20):
        bus.publish("work", f"step1-{i}".encode(), {})
    step1 = sorted(bus.pull("work-sub", 20), key=lambda d: d.data)
    in_commit, release = threading.Event(), threading.Event()

    def slow_write(conn: object) -> None:
        in_commit.set()
        release.wait(10)

    holder = threading.Thread(target=bus._write, args=(slow_write,))
    holder.start()
    assert in_commit.wait(10)
    barrier = threading.Barrier(20)
    leased: dict[int, list[bytes]] = {}

    def consumer(i: int) -> None:
        d = step1[i]
        done = Settlement(d, ack=True, publishes=[OutgoingMessage("work", f"step2-{i}".encode(), {})])
        barrier.wait()
        out = bus.exchange([done], {"work-sub": 3}, owner=f"c{i}")
        assert out.settle_error is None
        leased[i] = [x.data for x in out.deliveries["work-sub"]]

    threads = [threading.Thread(target=consumer, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    while len(bus._pending) < 20:
        time.sleep(0.001)
    release.set()
    for t in [holder, *threads]:
        t.join(10)

    taken = [x for xs in leased.values() for x in xs]
    assert len(leased) == 20
    assert len(taken) == len(set(taken)), "no message leased twice"
    assert set(taken) <= {f"step2-{i}".encode() for i in range(20)}
    rest = [x.data for x in bus.pull("work-sub", 100)]
    assert sorted(taken + rest) == sorted(f"step2-{i}".encode() for i in range(20)), "each published once"
    clock.advance(61)  # every step-1 delivery was acked exactly once: none comes back
    assert sorted(x.data for x in bus.pull("work-sub", 100)) == sorted(f"step2-{i}".encode() for i in range(20))
