"""Test support shared by the suites: a pipeline on the embedded backend with a
manual clock, and a scripted extractor that implements the model port."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common.adapters.local.clock import ManualClock
from common.adapters.local.sqlite_bus import Delivery, OutgoingMessage, Settlement, SqliteBus
from common.bootstrap import LocalApp, local_app
from common.config import Settings
from common.core.errors import ErrorKind, PermanentError, RetryableError, UnreadableDocument
from common.core.models import Export, ExportFormat, ExportSpec, ExtractionTask, Job, Operation, Run, SourceFile
from common.core.schema import INVOICE_PRESET, DocumentExtraction, FieldSpec, FieldValue
from common.ports.extractor import DocumentRef
from common.ports.store import Filter
from common.runtime.local import LocalRuntime
from common.service import jobs, repo
from common.service.context import Deps, TopologySender

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED = (REPO_ROOT / ".." / "shared").resolve()
SAMPLES = REPO_ROOT / "samples" / "invoices"


class ScriptedExtractor:
    """A model-port implementation whose behaviour is chosen by the file name.

    ``ok-*``: one row with invoice_number = the name; ``rows3-*``: three rows;
    ``bad-*``: PermanentError; ``flaky<N>-*``: RetryableError for the first N
    attempts; ``ratelimited-*``: a 429 every time, with a server delay.
    """

    name = "scripted"

    def __init__(self) -> None:
        self.calls: dict[str, int] = {}
        self._lock = threading.Lock()

    def extract(self, doc: DocumentRef, fields: Sequence[FieldSpec], *, prompt: str = "") -> DocumentExtraction:
        with self._lock:
            self.calls[doc.name] = n = self.calls.get(doc.name, 0) + 1
        stem = doc.name.rsplit(".", 1)[0]
        if stem.startswith("bad"):
            raise UnreadableDocument(f"{doc.name} is not a readable PDF")
        if stem.startswith("flaky"):
            fails = int(stem[5 : stem.index("-")])
            if n <= fails:
                raise RetryableError("upstream 503", kind=ErrorKind.SERVER)
        if stem.startswith("ratelimited"):
            raise RetryableError("429 quota exceeded", kind=ErrorKind.RATE_LIMITED, retry_after=30)
        if stem.startswith("invalid"):
            raise PermanentError("400 invalid document")
        names = [f.name for f in fields]
        rows_n = 3 if stem.startswith("rows3") else 1
        rows = [[f"{stem}#{i}" if c == names[0] else None for c in names] for i in range(rows_n)]
        return DocumentExtraction(
            columns=names,
            results=rows,
            fields={names[0]: FieldValue(value=rows[0][0], confidence=1.0)},
            row_pages=[1] * rows_n,
            pages=1,
            method="scripted",
        )


@dataclass
class Pipeline:
    """The embedded backend, wired by the composition root, driven synchronously."""

    deps: Deps
    bus: SqliteBus
    runtime: LocalRuntime
    clock: ManualClock
    tmp: Path
    extractor: Any
    sender: TopologySender = field(init=False)

    def __post_init__(self) -> None:
        self.sender = TopologySender(self.deps.topology, self.deps.settings, self.bus, self.clock)

    @classmethod
    def of(cls, app: LocalApp, *, tmp: Path, extractor: Any = None) -> Pipeline:
        """The pipeline over an app wired by :func:`common.bootstrap.local_app`."""
        clock: Any = app.deps.clock
        pipeline = cls(deps=app.deps, bus=app.bus, runtime=app.runtime, clock=clock, tmp=tmp, extractor=extractor)
        pipeline.sender = app.sender
        return pipeline

    def job(self, *, fields: Sequence[FieldSpec] = INVOICE_PRESET, formats: Sequence[str] = ("csv",)) -> Job:
        return jobs.create_job(
            self.deps,
            owner="alice",
            name="test job",
            fields=fields,
            exports=[ExportSpec(format=ExportFormat(f)) for f in formats],
        )

    def upload(self, job: Job, name: str, content: bytes | None = None) -> SourceFile:
        path = self.tmp / "inputs" / job.id / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if content is not None else f"%PDF-1.4 {name}".encode())
        return jobs.add_upload(self.deps, job, path)

    def start(self, job: Job) -> Run:
        return jobs.request_run(self.deps, self.sender, job)

    def drain(self, **kw: Any) -> int:
        return self.runtime.drain(**kw)

    def run(self, run_id: str) -> Run:
        return repo.require(self.deps.store, Run, run_id)[0]

    def tasks(self, run_id: str) -> list[ExtractionTask]:
        return list(repo.scan(self.deps.store, ExtractionTask, filters=[Filter("run_id", "==", run_id)]))

    def exports(self, run_id: str) -> list[Export]:
        return list(repo.scan(self.deps.store, Export, filters=[Filter("run_id", "==", run_id)]))

    def operation(self, run: Run) -> Operation:
        return repo.require(self.deps.store, Operation, run.operation_id)[0]

    def files(self, job_id: str) -> list[SourceFile]:
        return list(repo.scan(self.deps.store, SourceFile, filters=[Filter("job_id", "==", job_id)]))

    def export_text(self, export: Export) -> str:
        assert export.external_id is not None
        return self.deps.blobs.get_bytes(export.external_id).decode("utf-8-sig")


def make_pipeline(
    tmp: Path,
    *,
    extractor: Any = None,
    runtime_cls: type[LocalRuntime] = LocalRuntime,
    durable: bool = False,
    settings: dict[str, Any] | None = None,
    **settings_overrides: Any,
) -> Pipeline:
    """``durable``: fsync every commit, as ``sluice serve`` does (slower; widens race windows).
    ``settings`` and ``settings_overrides``: other Settings fields (e.g. a topology with a test kind's entry)."""
    clock = ManualClock()
    config = Settings(
        backend="local",
        data_dir=tmp / "data",
        durable=durable,
        progress_min_interval_s=1.0,
        **{**(settings or {}), **settings_overrides},
    )
    ex = extractor if extractor is not None else ScriptedExtractor()
    app = local_app(config, clock=clock, extractor_factory=(lambda _name: ex), runtime_cls=runtime_cls)
    return Pipeline.of(app, tmp=tmp, extractor=ex)


class DuplicatingRuntime(LocalRuntime):
    """Delivers every message at least three times.

    The first successful delivery is *not* acknowledged (as if the worker
    crashed after doing the work), so the same message id comes again; and a
    copy with a new id is published (as if a sender published twice).
    """

    def handle(self, function: str, delivery: Delivery) -> Settlement:
        settlement = super().handle(function, delivery)
        if settlement.ack and delivery.attempt == 1 and not delivery.attributes.get("dup"):
            topic = delivery.subscription.split("--")[0]
            copy = OutgoingMessage(topic, delivery.data, {**delivery.attributes, "dup": "1"})
            return Settlement(delivery, ack=False, retry_after_s=0, publishes=(*settlement.publishes, copy))
        return settlement
