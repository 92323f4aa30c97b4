"""Several worker processes on the embedded backend, as dramatiq's and Celery's masters run them.

The supervisor lives in the process that holds the data directory's lock (``sluice
serve --processes N``, ``SLUICE_PROCESSES``). It releases every bus lease left by
dead processes once, then runs N child processes, each a :class:`LocalRuntime`
with its own lease owner and ``start(recover_leases=False)``; only child 0 runs
the cron schedules. Killing one child (``kill -9`` included) loses only its
share of the in-flight work: as soon as it has exited the supervisor makes its
leased deliveries ready again (``release_leases(owner=...)``, without waiting
for their leases to expire), logs it, and starts a replacement.

What a dead child does not give back on purpose: its model-quota reservations
in the leased rate limiter. They expire within the limiter's horizon (about 3 s),
while releasing them would also release the live children's.

Children are started with the ``spawn`` method (the parent runs threads: the API
server), so ``prepare`` must be picklable: a module-level function.
"""

from __future__ import annotations

import logging
import multiprocessing
import multiprocessing.connection
import signal
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.process import BaseProcess
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from common.obs.logging import fields
from common.runtime.model_gateway import ModelGateway, vertex_endpoint

if TYPE_CHECKING:
    from common.adapters.local.sqlite_bus import SqliteBus
    from common.service.context import Deps

log = logging.getLogger("sluice.supervisor")

# A child that exits sooner than this after its start counts as a crash loop:
# its replacement waits, doubling up to MAX_RESTART_DELAY_S.
HEALTHY_AFTER_S = 10.0
FIRST_RESTART_DELAY_S = 0.5
MAX_RESTART_DELAY_S = 30.0


@dataclass(frozen=True)
class ChildSpec:
    """What one child process needs to run its share (pickled to the child)."""

    data_dir: Path
    owner: str
    index: int
    processes: int
    local_api_url: str | None = None
    prepare: Callable[[Deps], None] | None = None
    model_gateway_url: str | None = None


def run_child(spec: ChildSpec, ready: Any = None) -> None:
    """A child's life: run the stages until SIGTERM, then stop gracefully (in-flight handlers finish and settle)."""
    from common.bootstrap import local_app
    from common.config import Settings
    from common.obs import logging as slog

    stop = threading.Event()

    def on_term(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_term)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})  # a parent blocking it for sigwait passes that on
    # Ctrl-C reaches the whole process group: the supervisor decides, and stops us with SIGTERM.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    extra: dict[str, Any] = {} if spec.local_api_url is None else {"local_api_url": spec.local_api_url}
    if spec.model_gateway_url is not None:
        extra.update(gemini_base_url=spec.model_gateway_url, gemini_via_gateway=True)
    settings = Settings(backend="local", data_dir=spec.data_dir, instance_id=spec.owner, **extra)
    slog.configure(settings.log_level, settings.log_format)
    local = local_app(settings, owner=spec.owner, schedules=spec.index == 0, processes=spec.processes)
    if spec.prepare is not None:
        spec.prepare(local.deps)
    local.runtime.start(recover_leases=False)
    if ready is not None:
        ready.set()
    log.info("worker process started", extra=fields(owner=spec.owner, workers=local.runtime.workers))
    stop.wait()
    local.runtime.stop()


@dataclass
class Child:
    """One running child: its slot, process and lease owner."""

    index: int
    owner: str
    process: BaseProcess
    ready: Any  # a multiprocessing Event, set once the child runs its stages
    started: float = field(default_factory=time.monotonic)

    @property
    def pid(self) -> int | None:
        return self.process.pid


@dataclass(frozen=True)
class Exit:
    """A child that exited, and the deliveries its exit made ready again."""

    index: int
    owner: str
    pid: int | None
    exitcode: int | None
    released: int


class Supervisor:
    """Runs ``processes`` worker children over one data directory and replaces any that exits.

    The caller holds the data directory's lock. ``bus`` is the parent's handle
    on the same bus (for releasing leases); with ``deps`` (the parent's), the
    quota reserved ahead by the rate limiters of processes dead before the
    start is given back too, as a single runtime's start does.
    """

    def __init__(
        self,
        data_dir: Path,
        processes: int,
        bus: SqliteBus,
        *,
        local_api_url: str | None = None,
        prepare: Callable[[Deps], None] | None = None,
        deps: Deps | None = None,
        stop_timeout_s: float = 120.0,
    ) -> None:
        if processes < 1:
            raise ValueError("processes must be at least 1")
        self.data_dir = data_dir
        self.processes = processes
        self.bus = bus
        self._api_url = local_api_url
        self._prepare = prepare
        self._deps = deps
        self._stop_timeout = stop_timeout_s
        self._ctx = multiprocessing.get_context("spawn")
        self._children: dict[int, Child] = {}
        self._restart_at: dict[int, float] = {}
        self._delay: dict[int, float] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._monitor: threading.Thread | None = None
        self.exits: list[Exit] = []  # every child that exited while running (tests and operators)
        # The children's model calls, made here so that a child's death loses no answer.
        self.gateway: ModelGateway | None = None

    @property
    def children(self) -> list[Child]:
        with self._lock:
            return [self._children[i] for i in sorted(self._children)]

    def start(self) -> None:
        """Recover the leases of every earlier holder, start the children, and watch them."""
        released = self.bus.release_leases()
        if released:
            log.info("recovered messages leased by a dead process", extra=fields(count=released))
        if self._deps is not None:
            from common.service import leased_ratelimit

            leased_ratelimit.release_reservations(self._deps.store, self._deps.clock)
        settings = None if self._deps is None else self._deps.settings
        if settings is not None and settings.model_gateway:
            self.gateway = ModelGateway(settings.gemini_base_url or vertex_endpoint(settings.gemini_location))
            self.gateway.start()
        for index in range(self.processes):
            self._spawn(index)
        self._monitor = threading.Thread(target=self._watch, name="sluice-supervisor", daemon=True)
        self._monitor.start()
        log.info("worker processes started", extra=fields(processes=self.processes))

    def _spawn(self, index: int) -> None:
        owner = f"w{index}-{uuid.uuid4().hex[:8]}"
        gateway = None if self.gateway is None else self.gateway.url
        spec = ChildSpec(self.data_dir, owner, index, self.processes, self._api_url, self._prepare, gateway)
        ready = self._ctx.Event()
        proc = self._ctx.Process(target=run_child, args=(spec, ready), name=f"sluice-worker-{index}", daemon=False)
        proc.start()
        with self._lock:
            self._children[index] = Child(index, owner, proc, ready)

    def _watch(self) -> None:
        while not self._stopping.is_set():
            with self._lock:
                sentinels = {c.process.sentinel: c for c in self._children.values()}
            timeout = 0.2
            if self._restart_at:
                timeout = max(0.0, min(timeout, min(self._restart_at.values()) - time.monotonic()))
            for ready in multiprocessing.connection.wait(list(sentinels), timeout=timeout):
                if self._stopping.is_set():
                    return
                self._reap(sentinels[ready])  # type: ignore[index]
            self._restart_due()

    def _reap(self, child: Child) -> None:
        """A child exited: make its deliveries ready now, record it, and schedule its replacement."""
        child.process.join()
        released = self.bus.release_leases(owner=child.owner)
        if self._deps is not None:
            from common.service import leased_ratelimit

            # What its model-quota limiters had reserved ahead: its siblings take it up now.
            leased_ratelimit.release_reservations(self._deps.store, self._deps.clock, holder=child.owner)
        self.exits.append(Exit(child.index, child.owner, child.pid, child.process.exitcode, released))
        log.warning(
            "a worker process exited; its deliveries are ready again and it is being replaced",
            extra=fields(pid=child.pid, exitcode=child.process.exitcode, released=released, owner=child.owner),
        )
        with self._lock:
            del self._children[child.index]
        lived = time.monotonic() - child.started
        if lived >= HEALTHY_AFTER_S:
            self._delay.pop(child.index, None)
            delay = 0.0
        else:
            delay = self._delay.get(child.index, FIRST_RESTART_DELAY_S / 2) * 2
            delay = min(MAX_RESTART_DELAY_S, delay)
            self._delay[child.index] = delay
        self._restart_at[child.index] = time.monotonic() + delay

    def _restart_due(self) -> None:
        now = time.monotonic()
        for index, at in list(self._restart_at.items()):
            if at <= now and not self._stopping.is_set():
                del self._restart_at[index]
                self._spawn(index)

    def stop(self) -> None:
        """Stop every child gracefully (SIGTERM: in-flight handlers finish and settle), then return.

        A child still running after ``stop_timeout_s`` is killed, and its leases released.
        """
        self._stopping.set()
        if self._monitor is not None:
            self._monitor.join()
        children = self.children
        for c in children:
            if c.process.is_alive():
                c.process.terminate()
        deadline = time.monotonic() + self._stop_timeout
        for c in children:
            c.process.join(max(0.0, deadline - time.monotonic()))
            if c.process.is_alive():
                log.error("a worker process did not stop in time; killing it", extra=fields(pid=c.pid))
                c.process.kill()
                c.process.join()
            if c.process.exitcode != 0:
                self.bus.release_leases(owner=c.owner)
        with self._lock:
            self._children.clear()
        if self.gateway is not None:
            self.gateway.stop()  # after the children: their calls in flight are answered first
