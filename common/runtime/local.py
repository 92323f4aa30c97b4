"""The embedded runtime: wires itself from the topology and runs every stage.

Each subscription in ``topology.yaml`` has its function's bounded worker pool
(slow model calls overlap). Workers never touch the bus: they return a
settlement (ack/nack/dead-letter plus what the handler published) to one bus
thread. In one transaction that thread settles every finished delivery and
leases new ones for every pool with room -- one write lock and one fsync for
many stages, and a handler's publishes land atomically with its ack (and can
be leased in the same transaction).

Tests use :meth:`LocalRuntime.drain` instead: the same dispatch, synchronous
and deterministic, optionally moving a manual clock to the next due message.
"""

from __future__ import annotations

import logging
import math
import os
import queue
import threading
import time
import uuid
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from common.adapters.local.clock import ManualClock
from common.adapters.local.sqlite_bus import Delivery, OutgoingMessage, Settlement, SqliteBus, SubscriptionConfig
from common.config import Settings
from common.core.cron import Cron
from common.core.messages import MESSAGE_TYPES
from common.core.models import ExtractorName
from common.obs.logging import fields
from common.obs.metrics import QueueStat
from common.service import leased_ratelimit
from common.service.context import Deps, TopologySender
from common.service.dispatch import dispatch
from common.topology import SubscriptionSpec, Topology
from common.topology import subscription_name as subscription_name  # re-exported (the API imports it here)

log = logging.getLogger("sluice.runtime")


@dataclass
class BufferPublisher:
    """A Publisher that keeps what a handler sends until its delivery settles."""

    messages: list[OutgoingMessage] = field(default_factory=list)

    def publish(
        self,
        topic: str,
        data: bytes,
        attributes: Mapping[str, str],
        *,
        deliver_after: datetime | None = None,
        ordering_key: str | None = None,
    ) -> str:
        self.messages.append(OutgoingMessage(topic, data, dict(attributes), deliver_after))
        return f"buffered-{len(self.messages)}"


@dataclass(frozen=True)
class _Sub:
    name: str
    topic: str
    function: str
    spec: SubscriptionSpec
    workers: int


def declare_topology(bus: SqliteBus, topo: Topology, settings: Settings) -> None:
    """Create every topic and subscription ``topo`` describes (idempotent)."""
    for topic in topo.topics:
        bus.declare_topic(settings.topic_name(topic))
    for topic, spec in topo.subscribed_topics().items():
        dlq = spec.dead_letter_topic
        bus.declare_subscription(
            SubscriptionConfig(
                name=subscription_name(settings.topic_name(topic), spec.function),
                topic=settings.topic_name(topic),
                ack_deadline_s=spec.ack_deadline_s,
                max_delivery_attempts=spec.max_delivery_attempts,
                min_backoff_s=spec.min_backoff_s,
                max_backoff_s=spec.max_backoff_s,
                dead_letter_topic=None if dlq is None else settings.topic_name(dlq),
            )
        )


DEFAULT_WORKERS = 8

# Handlers faster than this on average get one delivery leased ahead per worker.
PREFETCH_BELOW_S = 0.05


# Seconds of model latency the automatic pool covers at the full quota.
MODEL_LATENCY_S = 10.0


def worker_count(settings: Settings, topo: Topology, function: str, requested: int | None = None) -> int:
    """Handler threads for ``function``: ``requested``, else ``SLUICE_WORKERS``, else
    automatic -- at most the function's concurrency in the cloud (instances x
    concurrency) in every case.

    Automatic is :data:`DEFAULT_WORKERS`, except for the function that calls a
    remote model (the topology's ``model_quota.function`` with the Gemini
    extractor): its handlers mostly wait on the model, so it gets the calls
    the quota keeps in flight when each takes up to :data:`MODEL_LATENCY_S`
    (``SLUICE_MODEL_RPM / 60 * 10``: 100 at 600/min). Not more: every handler
    claims its task with a store write before it meets the quota, and 500 of
    them at once on a 600/min quota held the store (and the limiter's own
    renewals) for over a minute. Threads are cheap for waiting; CPU-bound
    offline extraction keeps the small pool.
    """
    fn = topo.functions[function]
    cap = fn.concurrency * fn.max_instances
    if requested is None:
        requested = settings.workers or None
    if requested is None:
        if waits_on_model(settings, topo, function):
            requested = max(DEFAULT_WORKERS, math.ceil(settings.model_rpm / 60 * MODEL_LATENCY_S))
        else:
            requested = DEFAULT_WORKERS
    return max(1, min(cap, requested))


def waits_on_model(settings: Settings, topo: Topology, function: str) -> bool:
    """Whether ``function``'s handlers mostly wait on a remote model (the topology's model quota)."""
    quota = topo.model_quota
    return quota is not None and quota.function == function and settings.extractor is not ExtractorName.OFFLINE


def workers_per_process(
    settings: Settings, topo: Topology, function: str, requested: int | None, processes: int
) -> int:
    """One runtime's share of ``function``'s handler threads when ``processes`` share the work.

    A share each (rounded up), so N processes keep about as many calls in flight as
    one; except the automatic pool of a function waiting on a remote model, which
    each process keeps whole: the quota, not the threads, bounds its calls, and a
    process must carry the whole quota while a sibling is down (killed, restarting)
    or starved of it (another's leases hold the shards).
    """
    count = worker_count(settings, topo, function, requested)
    share = math.ceil(count / max(1, processes))
    automatic = requested is None and not settings.workers
    if automatic and waits_on_model(settings, topo, function):
        # Whole, within the function's concurrency in the cloud shared by the processes:
        # a quota so large that the pool is at that cap (thousands a minute) is shared as
        # before, or N processes would claim N times as many items at once.
        fn = topo.functions[function]
        return min(count, max(share, fn.concurrency * fn.max_instances // max(1, processes)))
    return share


class LocalRuntime:
    def __init__(
        self,
        deps: Deps,
        bus: SqliteBus,
        *,
        functions: Collection[str] | None = None,
        handlers: dict[str, dict[str, str]] | None = None,
        max_workers: int | None = None,
        batch_size: int = 64,
        poll_interval_s: float = 0.05,
        owner: str | None = None,
        schedules: bool = True,
        processes: int = 1,
    ) -> None:
        """``owner``: the lease owner id (default: this process and a random suffix).
        ``schedules``: run the topology's cron schedules here (one process of
        several does). ``processes``: how many runtimes share the work; each takes
        its share of the handler threads (:func:`workers_per_process`).
        """
        self.deps = deps
        self.bus = bus
        self._handlers = handlers
        self._batch = batch_size
        self._poll = poll_interval_s
        self.owner = owner or f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        topo = deps.topology
        self._subs: list[_Sub] = []
        for topic, spec in topo.subscribed_topics().items():
            if functions is not None and spec.function not in functions:
                continue
            workers = workers_per_process(deps.settings, topo, spec.function, max_workers, processes)
            name = subscription_name(self._topic(topic), spec.function)
            self._subs.append(_Sub(name, self._topic(topic), spec.function, spec, workers))
        self._crons = {name: Cron.parse(s.cron) for name, s in topo.schedules.items()} if schedules else {}
        self._next_fire: dict[str, datetime] = {}
        self._threads: list[threading.Thread] = []
        self._stop = threading.Event()
        self._kick = threading.Event()  # work for the bus thread: a settlement, a publish, stop
        self._published = False  # another thread published: every pool's queue may have work
        self._settle_q: queue.SimpleQueue[Settlement] = queue.SimpleQueue()
        self._bus_thread: int | None = None
        self.declared = False

    def _topic(self, topic: str) -> str:
        return self.deps.settings.topic_name(topic)

    @property
    def workers(self) -> dict[str, int]:
        """Handler threads per function."""
        return {s.function: s.workers for s in self._subs}

    @property
    def subscriptions(self) -> list[str]:
        return [s.name for s in self._subs]

    def queue_stats(self) -> list[QueueStat]:
        """Each subscription's backlog, for the queue gauges (:func:`common.obs.metrics.register_queue_probe`)."""
        return [QueueStat(name, *self.bus.backlog(name)) for name in self.subscriptions]

    # -- wiring ---------------------------------------------------------------

    def declare(self) -> None:
        """Create the topology's topics and subscriptions in the bus (idempotent)."""
        declare_topology(self.bus, self.deps.topology, self.deps.settings)
        self.declared = True

    # -- one delivery ---------------------------------------------------------

    def handle(self, function: str, delivery: Delivery) -> Settlement:
        buffer = BufferPublisher()
        sender = TopologySender(self.deps.topology, self.deps.settings, buffer, self.deps.clock)
        outcome = dispatch(
            function,
            delivery.data,
            delivery.attributes,
            deps=self.deps,
            sender=sender,
            message_id=delivery.message_id,
            attempt=delivery.attempt,
            handlers=self._handlers,
            published_at=delivery.publish_time,
        )
        if outcome.status == "done":
            return Settlement(delivery, ack=True, publishes=tuple(buffer.messages))
        # A failed or retried handler's sends are dropped with it: its bus
        # effects are all-or-nothing, like its acknowledgement.
        if outcome.status == "failed":
            return Settlement(delivery, ack=True, dead_letter=True, error=outcome.error)
        return Settlement(delivery, ack=False, retry_after_s=outcome.retry_after_s, error=outcome.error)

    # -- deterministic mode (tests, benchmarks) ----------------------------------

    def drain(
        self,
        *,
        advance_clock: bool = False,
        until: Callable[[], bool] | None = None,
        max_deliveries: int = 1_000_000,
    ) -> int:
        """Deliver ready messages until none is ready; return how many were handled.

        With ``advance_clock`` (a :class:`ManualClock` only) time jumps to the
        next delayed delivery and scheduled job instead of stopping there.
        """
        if not self.declared:
            self.declare()
        handled = 0
        names = self.subscriptions
        while handled < max_deliveries:
            progressed = False
            for s in self._subs:
                deliveries = self.bus.pull(s.name, self._batch, owner=self.owner)
                if deliveries:
                    self.bus.settle([self.handle(s.function, d) for d in deliveries])
                    handled += len(deliveries)
                    progressed = True
            if until is not None and until():
                return handled
            if progressed:
                continue
            if not advance_clock:
                return handled
            clock = self.deps.clock
            if not isinstance(clock, ManualClock):
                raise TypeError("advance_clock needs a ManualClock")
            nxt = self.bus.next_ready_at(names)
            if nxt is None:
                return handled
            clock.set(max(nxt, clock.now()))
        return handled

    def tick_schedules(self) -> int:
        """Publish the scheduled messages that are due; return how many."""
        now = self.deps.clock.now()
        fired = 0
        sender = TopologySender(self.deps.topology, self.deps.settings, self.bus, self.deps.clock)
        for name, cron in self._crons.items():
            nxt = self._next_fire.get(name)
            if nxt is None:
                self._next_fire[name] = cron.next_after(now)
                continue
            if nxt <= now:
                kind = self.deps.topology.schedules[name].kind
                sender.send(MESSAGE_TYPES[kind]())
                self._next_fire[name] = cron.next_after(now)
                fired += 1
                log.info("scheduled job fired", extra=fields(schedule=name))
        return fired

    # -- threaded mode ----------------------------------------------------------

    def start(self, *, recover_leases: bool = True) -> None:
        """Run every subscription's pump and worker pool in background threads.

        ``recover_leases``: the caller holds the data directory's lock, so any
        lease in the bus belongs to a dead process: make those messages ready now,
        and give back the quota its rate limiters had reserved ahead.
        """
        if not self.declared:
            self.declare()
        if recover_leases:
            released = self.bus.release_leases()
            if released:
                log.info("recovered messages leased by a dead process", extra=fields(count=released))
            leased_ratelimit.release_reservations(self.deps.store, self.deps.clock)
        self._stop.clear()
        pools = [_Pool(s, self.handle, self._settle_q.put, self._kick.set, self._now) for s in self._subs]
        self.bus.add_listener(self._on_publish)
        loop = threading.Thread(target=self._bus_loop, args=(pools,), name="sluice-bus", daemon=True)
        ticker = threading.Thread(target=self._tick_loop, name="sluice-cron", daemon=True)
        # The extractor's imports and client, ahead of the first item (that item's
        # handler would hold the import lock while the other handlers wait on it).
        warm = threading.Thread(target=self.deps.warm, name="sluice-warm", daemon=True)
        self._threads += [loop, ticker, warm]
        for t in self._threads:
            t.start()

    def _now(self) -> float:
        return self.deps.clock.now().timestamp()

    def _on_publish(self) -> None:
        # The bus thread's own commits are accounted for where it makes them.
        if threading.get_ident() != self._bus_thread:
            self._published = True
            self._kick.set()

    def _bus_loop(self, pools: list[_Pool]) -> None:
        """Settle what the workers finished and lease what the pools can take, in one
        transaction per turn; until stopped and every leased delivery is settled."""
        self._bus_thread = threading.get_ident()
        stale = {p.name for p in pools}  # pools whose queue may hold ready work
        poll_at = 0.0
        while True:
            self._kick.clear()
            stopping = self._stop.is_set()
            # Idle before taking: a worker hands its settlement over before it goes idle.
            idle = stopping and all(p.idle() for p in pools)
            settlements = self._take_settlements()
            if stopping:
                if idle and not settlements:
                    break
                pulls: dict[str, int] = {}
            else:
                if self._published or time.monotonic() >= poll_at:
                    # Delayed and redelivered messages become ready without a publish.
                    self._published = False
                    poll_at = time.monotonic() + self._poll
                    stale = {p.name for p in pools}
                pulls = {p.name: min(n, self._batch) for p in pools if p.name in stale and (n := p.free()) > 0}
            if not settlements and not pulls:
                self._kick.wait(self._poll)
                continue
            stale = (stale - pulls.keys()) | self._exchange(settlements, pulls, pools)
        for p in pools:
            p.close()

    def _take_settlements(self) -> list[Settlement]:
        batch: list[Settlement] = []
        while len(batch) < 512:
            try:
                batch.append(self._settle_q.get_nowait())
            except queue.Empty:
                break
        return batch

    def _exchange(self, settlements: list[Settlement], pulls: dict[str, int], pools: list[_Pool]) -> set[str]:
        """One transaction; returns the pools that may have more ready work."""
        try:
            out = self.bus.exchange(settlements, pulls, owner=self.owner)
        except Exception:
            # The settled deliveries stay leased and are redelivered when their
            # leases expire: nothing is lost, only delayed. Leasing is retried.
            log.exception(
                "bus exchange failed; its deliveries will be redelivered", extra=fields(settlements=len(settlements))
            )
            self._stop.wait(1.0)
            return set()
        if out.settle_error is not None:
            log.error(
                "settling failed; the messages will be redelivered",
                exc_info=out.settle_error,
                extra=fields(count=len(settlements)),
            )
        more = set()
        for p in pools:
            got = out.deliveries.get(p.name)
            if got:
                p.submit(got)
            if got is not None and len(got) == pulls[p.name]:
                more.add(p.name)  # a full batch: there may be more
        if settlements and out.settle_error is None:
            if any(not s.ack or s.dead_letter for s in settlements):
                return {p.name for p in pools}  # retried and dead-lettered work (rare): look everywhere
            topics = {m.topic for s in settlements for m in s.publishes}
            more |= {p.name for p in pools if p.topic in topics}
        return more

    def _tick_loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick_schedules()
            except Exception:
                log.exception("scheduler tick failed")
            self._stop.wait(1.0)

    def stop(self) -> None:
        """Stop leasing, let in-flight handlers finish, settle them, and join."""
        self._stop.set()
        self._kick.set()
        self.bus.remove_listener(self._on_publish)
        for t in self._threads:
            t.join()
        self._threads.clear()
        self._bus_thread = None


class _Pool:
    """One subscription's handler threads, reading one queue.

    Threads start as the load needs them, up to ``spec.workers``; a delivery
    costs a queue put, not an executor's future and work item. A worker is
    free as soon as its handler returns: the settlement waits for the bus
    thread's next transaction without holding a worker.

    While the handlers are fast (see :data:`PREFETCH_BELOW_S`) the pool takes
    one delivery ahead per worker, as Redis task queues prefetch: each lease
    and each commit then carries about twice the deliveries. Slow handlers get
    no prefetch, so a leased delivery never waits long for a worker (its lease
    keeps running) and a newly published urgent message never queues behind
    already-leased lower-priority ones for more than about
    :data:`PREFETCH_BELOW_S`. A delivery that waited out its lease all the same
    is dropped unrun: the bus may have handed it out again.
    """

    def __init__(
        self,
        spec: _Sub,
        handle: Callable[[str, Delivery], Settlement],
        settled: Callable[[Settlement], None],
        wake: Callable[[], None],
        now: Callable[[], float],
    ) -> None:
        self.name = spec.name
        self.topic = spec.topic
        self._spec = spec
        self._handle = handle
        self._settled = settled
        self._wake = wake
        self._now = now
        self._inflight = 0
        self._handler_s = math.inf  # moving average of the handlers' durations; unknown at first
        self._lock = threading.Lock()
        self._queue: queue.SimpleQueue[Delivery | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []

    def free(self) -> int:
        """How many more deliveries the pool takes now."""
        with self._lock:
            capacity = self._spec.workers * (2 if self._handler_s < PREFETCH_BELOW_S else 1)
            return max(0, capacity - self._inflight)

    def idle(self) -> bool:
        """No delivery queued or being handled (every settlement has been handed over)."""
        return self._inflight == 0

    def submit(self, deliveries: list[Delivery]) -> None:
        with self._lock:
            self._inflight += len(deliveries)
            busy = self._inflight
        for d in deliveries:
            self._queue.put(d)
        while len(self._threads) < min(busy, self._spec.workers):
            name = f"sluice-{self._spec.function}_{len(self._threads)}"
            t = threading.Thread(target=self._work, name=name, daemon=True)
            self._threads.append(t)
            t.start()

    def _work(self) -> None:
        function = self._spec.function
        while (d := self._queue.get()) is not None:
            started = time.perf_counter()
            if d.lease_expires_at is not None and self._now() >= d.lease_expires_at:
                # It waited out its lease in the queue: the bus may already have
                # handed it out again, and that delivery runs it (never both).
                log.warning("a queued delivery's lease expired; left to its redelivery", extra=fields(seq=d.seq))
            else:
                self._run(function, d)
            seconds = time.perf_counter() - started
            with self._lock:
                self._inflight -= 1
                avg = self._handler_s
                self._handler_s = seconds if avg == math.inf else avg + (seconds - avg) * 0.2
            self._wake()

    def _run(self, function: str, d: Delivery) -> None:
        try:
            settlement = self._handle(function, d)
        except BaseException as exc:  # dispatch catches everything; this is a last guard
            log.exception("handler crashed outside dispatch")
            settlement = Settlement(d, ack=False, error=repr(exc))
        # Handed over before the slot is released, so an idle pool has no settlement in hand.
        self._settled(settlement)

    def close(self) -> None:
        """Let the workers finish what is queued (FIFO, before their stop marks), then join them."""
        for _ in self._threads:
            self._queue.put(None)
        for t in self._threads:
            t.join()
