"""Several worker processes on one data directory (``sluice serve --processes N``): real child
processes, one killed with -9 while its extractions are held; only its share is redone."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from common.adapters.local.sqlite_bus import SqliteBus
from common.bootstrap import LocalApp, local_app
from common.cli_support import data_dir_lock
from common.config import Settings
from common.core.models import ExtractionTask
from common.core.schema import INVOICE_PRESET, DocumentExtraction, FieldSpec
from common.core.states import TaskStatus
from common.ports.extractor import DocumentRef, Extractor
from common.ports.store import Filter
from common.runtime.supervisor import Supervisor
from common.service import jobs, repo
from common.service.context import Deps
from tests.support import REPO_ROOT

ITEMS = 9  # all held at once (3 per child): the killed child's items are then the only ones ready


def _effects(data_dir: Path) -> Path:
    return data_dir.parent / "effects.log"


def _gate(data_dir: Path) -> Path:
    return data_dir.parent / "gate-open"


def _record(path: Path, line: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)  # one write per line: atomic across processes
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


def hold_and_count(deps: Deps) -> None:
    """Each child's extractor: records its start, waits for the test's gate file, records its effect."""
    data_dir = deps.settings.data_dir
    real = deps.extractor_factory

    class Held:
        def __init__(self, inner: Extractor) -> None:
            self.inner = inner
            self.name = inner.name

        def extract(self, doc: DocumentRef, fields: Sequence[FieldSpec], *, prompt: str = "") -> DocumentExtraction:
            _record(_effects(data_dir), f"start {os.getpid()} {doc.name}")
            deadline = time.monotonic() + 120
            while not _gate(data_dir).exists():
                if time.monotonic() > deadline:
                    raise TimeoutError("the test never opened the gate")
                time.sleep(0.02)
            out = self.inner.extract(doc, fields, prompt=prompt)
            _record(_effects(data_dir), f"done {os.getpid()} {doc.name}")
            return out

    deps.extractor_factory = lambda name: Held(real(name))


def _lines(data_dir: Path, kind: str) -> list[tuple[int, str]]:
    path = _effects(data_dir)
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        what, pid, name = line.split(" ", 2)
        if what == kind:
            out.append((int(pid), name))
    return out


def _wait(what: str, check: Callable[[], Any], timeout: float = 90) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _make_invoices(folder: Path, n: int) -> list[Path]:
    sys.path.insert(0, str(REPO_ROOT / "samples"))
    try:
        import generate
    finally:
        sys.path.pop(0)
    folder.mkdir()
    paths = []
    for i in range(n):
        inv = replace(generate.UK_INVOICE, file_name=f"inv{i:03d}.pdf", number=f"HF-{30000 + i}")
        generate.render(inv, folder / inv.file_name)
        paths.append(folder / inv.file_name)
    return paths


@pytest.fixture
def held_app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalApp]:
    # 3 handler threads per child (SLUICE_WORKERS=9 shared by 3 processes): 9 extractions held at once.
    monkeypatch.setenv("SLUICE_WORKERS", "9")
    data_dir = tmp_path / "data"
    with data_dir_lock(data_dir):
        yield local_app(Settings(backend="local", data_dir=data_dir))


def _leased_by(bus: SqliteBus, owner: str) -> int:
    row = bus._conn().execute("SELECT COUNT(*) FROM deliveries WHERE lease_owner = ?", (owner,)).fetchone()
    return int(row[0])


def test_a_child_killed_with_9_loses_only_its_share_and_each_item_takes_effect_once(
    held_app: LocalApp, tmp_path: Path
) -> None:
    deps, bus = held_app.deps, held_app.bus
    data_dir = deps.settings.data_dir
    job = jobs.create_job(deps, owner="alice", name="held", fields=INVOICE_PRESET)
    for path in _make_invoices(tmp_path / "docs", ITEMS):
        jobs.add_upload(deps, job, path)
    sup = Supervisor(data_dir, 3, bus, prepare=hold_and_count)
    sup.start()
    try:
        run = jobs.request_run(deps, held_app.sender, job)
        # Every child holds its 3 extractions.
        _wait("9 held extractions in 3 processes", lambda: len({p for p, _ in _lines(data_dir, "start")}) == 3)
        _wait("9 held extractions", lambda: len(_lines(data_dir, "start")) >= 9)
        victim = next(c for c in sup.children if c.pid in {p for p, _ in _lines(data_dir, "start")})
        assert victim.pid is not None
        held_by_victim = {n for p, n in _lines(data_dir, "start") if p == victim.pid}
        first_pids = {c.pid for c in sup.children}

        os.kill(victim.pid, signal.SIGKILL)
        (gone,) = _wait("the supervisor to see the exit", lambda: list(sup.exits))
        assert gone.pid == victim.pid and gone.exitcode == -signal.SIGKILL
        assert gone.released >= len(held_by_victim), "its leased deliveries were made ready at once"
        assert _leased_by(bus, victim.owner) == 0
        # A replacement takes the released items while the live children are still held:
        # they were redelivered long before their leases (minutes) would have expired.
        replacement = _wait(
            "a replacement child", lambda: next((c for c in sup.children if c.pid not in first_pids), None)
        )
        _wait(
            "the killed child's items to start again in the replacement",
            lambda: held_by_victim <= {n for p, n in _lines(data_dir, "start") if p == replacement.pid},
        )
        assert len(sup.children) == 3

        _gate(data_dir).touch()

        def finished() -> list[ExtractionTask]:
            tasks = list(repo.scan(deps.store, ExtractionTask, filters=[Filter("run_id", "==", run.id)]))
            return tasks if len(tasks) == ITEMS and all(t.status is TaskStatus.COMPLETED for t in tasks) else []

        _wait("every item completed", finished)
    finally:
        _gate(data_dir).touch()
        sup.stop()
    effects = Counter(n for _, n in _lines(data_dir, "done"))
    assert sorted(effects) == sorted(f"inv{i:03d}.pdf" for i in range(ITEMS)), "no item lost"
    assert set(effects.values()) == {1}, "no effect duplicated"
    assert victim.pid not in {p for p, _ in _lines(data_dir, "done")}
    assert all(e.exitcode == -signal.SIGKILL for e in sup.exits), "the others stopped only at the end, gracefully"


def test_stop_ends_every_child_gracefully_and_leaves_no_lease(held_app: LocalApp) -> None:
    sup = Supervisor(held_app.deps.settings.data_dir, 2, held_app.bus)
    sup.start()
    children = sup.children
    _wait("2 children running", lambda: all(c.ready.is_set() for c in children))
    sup.stop()
    assert [c.process.exitcode for c in children] == [0, 0]
    assert sup.exits == [] and sup.children == []


def test_a_runtime_among_several_takes_its_share_of_the_handlers_and_only_one_runs_the_schedules(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from common.adapters.local.clock import ManualClock

    monkeypatch.setenv("SLUICE_WORKERS", "8")
    settings = Settings(backend="local", data_dir=tmp_path / "data")
    clock = ManualClock()
    alone = local_app(settings, clock=clock)
    first = local_app(deps=alone.deps, processes=3, schedules=True)
    other = local_app(deps=alone.deps, processes=3, schedules=False)
    assert alone.runtime.workers["extract"] == 8
    assert first.runtime.workers["extract"] == other.runtime.workers["extract"] == 3, "8 shared by 3, rounded up"
    for runtime in (first.runtime, other.runtime):
        runtime.tick_schedules()  # plans the next firings
    clock.advance(3600)
    assert first.runtime.tick_schedules() >= 1
    assert other.runtime.tick_schedules() == 0, "the hourly jobs fire in one process, not in each"


def test_each_process_keeps_the_whole_automatic_pool_of_the_function_waiting_on_a_remote_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its calls are bounded by the quota, not by threads, and a process must carry the whole
    quota while its sibling is down or starved of leases; other pools are shared as before."""
    monkeypatch.delenv("SLUICE_WORKERS", raising=False)
    settings = Settings(backend="local", data_dir=tmp_path / "data", extractor="gemini", project="p", model_rpm=600)
    alone = local_app(settings)
    one_of_two = local_app(deps=alone.deps, processes=2, schedules=False)

    assert alone.runtime.workers["extract"] == 100  # 600 a minute for up to 10 s each
    assert one_of_two.runtime.workers["extract"] == 100
    assert one_of_two.runtime.workers["export"] == -(-alone.runtime.workers["export"] // 2)


def test_a_model_pool_at_the_functions_cloud_concurrency_is_shared_between_processes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A quota so large that the pool is at the topology's cap (instances x concurrency):
    N processes keeping it whole would claim N times as many items at once."""
    monkeypatch.delenv("SLUICE_WORKERS", raising=False)
    settings = Settings(backend="local", data_dir=tmp_path / "data", extractor="gemini", project="p", model_rpm=100_000)
    alone = local_app(settings)
    one_of_two = local_app(deps=alone.deps, processes=2, schedules=False)

    fn = alone.deps.topology.functions["extract"]
    assert alone.runtime.workers["extract"] == fn.concurrency * fn.max_instances
    assert one_of_two.runtime.workers["extract"] == fn.concurrency * fn.max_instances // 2


def test_serving_with_several_processes_runs_a_supervisor_and_stops_it(tmp_path: Path) -> None:
    from common.serve import serving

    with serving(tmp_path / "data", dev_identity="alice", processes=2) as served:
        assert served.supervisor is not None
        children = served.supervisor.children
        assert len(children) == 2
        _wait("2 children running", lambda: all(c.ready.is_set() for c in children))
    assert [c.process.exitcode for c in children] == [0, 0]


def _worker_children(pid: int) -> list[int]:
    out = []
    for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
        cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
        if b"spawn_main" in cmdline:  # not multiprocessing's resource tracker
            out.append(int(child))
    return out


def test_sluice_serve_processes_runs_that_many_workers_and_stops_them_on_sigterm(tmp_path: Path) -> None:
    import subprocess

    cmd = [sys.executable, "-m", "common.cli", "serve", "--port", "0", "--dev-identity", "me", "--processes", "2"]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().startswith(b"Sluice API on ")
        workers = _wait(
            "2 worker processes", lambda: len(_worker_children(proc.pid)) == 2 and _worker_children(proc.pid)
        )
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
        assert not any(Path(f"/proc/{w}").exists() for w in workers), "the workers stopped with it"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_sluice_serve_refuses_fewer_than_one_process(tmp_path: Path) -> None:
    import subprocess

    cmd = [sys.executable, "-m", "common.cli", "serve", "--port", "0", "--processes", "0"]
    res = subprocess.run(
        cmd, cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)}, capture_output=True, text=True, timeout=60
    )
    assert res.returncode == 2 and "--processes must be at least 1" in res.stderr


def note_instance(deps: Deps) -> None:
    """A child's prepare: record the name its limiters note their reservations under."""
    _record(deps.settings.data_dir / "instances", deps.settings.instance_id)


def test_a_child_killed_with_9_gives_back_the_model_quota_it_had_reserved_ahead(held_app: LocalApp) -> None:
    sup = Supervisor(held_app.deps.settings.data_dir, 2, held_app.bus, prepare=note_instance, deps=held_app.deps)
    sup.start()
    try:
        children = sup.children
        _wait("2 children running", lambda: all(c.ready.is_set() for c in children))
        names = (held_app.deps.settings.data_dir / "instances").read_text().split()
        assert sorted(names) == sorted(c.owner for c in children), "each child's limiters note it by its owner"
        victim, sibling = children
        store, now = held_app.deps.store, time.time()
        store.set(
            "ratelimits",
            "gemini:p:m:shard-000",
            {"tokens": -2.0, "updated_at": now, "holders": {victim.owner: [now + 60], sibling.owner: [now + 61]}},
        )

        assert victim.pid is not None
        os.kill(victim.pid, signal.SIGKILL)
        _wait("the supervisor to see the exit", lambda: sup.exits)

        shard = store.get("ratelimits", "gemini:p:m:shard-000")
        assert shard is not None
        assert shard.data["tokens"] == -1.0, "the dead child's token ahead is free again"
        assert shard.data["holders"] == {sibling.owner: [now + 61]}, "its sibling's stays reserved"
    finally:
        sup.stop()


def gemini_with_test_credentials(deps: Deps) -> None:
    """A child's extractor: the real Gemini adapter, through the supervisor's model
    gateway (``gemini_base_url``), with a token the fake Vertex AI accepts."""
    from google.oauth2.credentials import Credentials

    from common.adapters.gcp.gemini import GeminiExtractor

    def factory(_name: str) -> Extractor:
        return GeminiExtractor(
            project="p",
            location="europe-west1",
            model="gemini-2.5-flash",
            blobs=deps.blobs,
            clock=deps.clock,
            credentials=Credentials(token="test"),  # type: ignore[no-untyped-call]
            http_base_url=deps.settings.gemini_base_url,
            ask_gateway_first=deps.settings.gemini_via_gateway,
        )

    deps.extractor_factory = factory


def test_a_child_killed_with_9_mid_call_costs_no_second_model_call(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.fakes.vertex import FakeVertex, RecordedRequest, Reply, answer

    docs = 4
    answers_may_go = threading.Event()
    row = ["F-1", "2024-05-10", 119.0, "EUR", "ACME GmbH", "Globex SA"]

    def reply(_req: RecordedRequest) -> Reply:
        answers_may_go.wait(60)  # every call stays in flight until the test lets them answer
        return answer({"columns": [f.name for f in INVOICE_PRESET], "results": [row], "pages": [1]})

    with FakeVertex() as fake:
        fake.default = reply
        for name, value in {
            "SLUICE_WORKERS": "4",  # 2 handler threads per child: every document in flight at once
            "SLUICE_EXTRACTOR": "gemini",
            "SLUICE_PROJECT": "p",
            "SLUICE_GEMINI_BASE_URL": fake.base_url,  # the gateway's upstream
        }.items():
            monkeypatch.setenv(name, value)
        data_dir = tmp_path / "data"
        with data_dir_lock(data_dir):
            app = local_app(Settings(backend="local", data_dir=data_dir))
            job = jobs.create_job(app.deps, owner="alice", name="gateway", fields=INVOICE_PRESET)
            for path in _make_invoices(tmp_path / "docs", docs):
                jobs.add_upload(app.deps, job, path)
            sup = Supervisor(data_dir, 2, app.bus, prepare=gemini_with_test_credentials, deps=app.deps)
            sup.start()
            try:
                run = jobs.request_run(app.deps, app.sender, job)
                _wait("every document's call in flight", lambda: len(fake.requests) >= docs)
                victim = next(c for c in sup.children if _leased_by(app.bus, c.owner) > 0)
                assert victim.pid is not None
                os.kill(victim.pid, signal.SIGKILL)
                (gone,) = _wait("the supervisor to see the exit", lambda: list(sup.exits))
                answers_may_go.set()

                def finished() -> list[ExtractionTask]:
                    tasks = list(repo.scan(app.deps.store, ExtractionTask, filters=[Filter("run_id", "==", run.id)]))
                    done = len(tasks) == docs and all(t.status is TaskStatus.COMPLETED for t in tasks)
                    return tasks if done else []

                _wait("every document extracted", finished)
            finally:
                answers_may_go.set()
                sup.stop()
    assert gone.released >= 1, "the killed child had calls in flight"
    assert len(fake.requests) == docs, "no document was sent to the model twice"
    assert sup.gateway is not None
    assert sup.gateway.served_kept + sup.gateway.joined == gone.released, "its retries took the answers it left"
