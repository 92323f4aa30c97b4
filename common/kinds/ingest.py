"""``ingest``: a search collection's documents into one of its indexes, one work item per document.

Each collection has one job of this kind (created and deleted with it, same
owner); the collection service (:mod:`common.service.collections`) starts its
runs: an *ingest* run when documents are added (into the active index, and
into the index being built if a re-index is going on), a *re-index* run when
the embedding model changes (every document, into a new index). The job
allows concurrent runs, so both can go at once. A run's settings
(:class:`common.core.retrieval.IngestSettings`) name its documents, index and
embedding model, so the fan-out stays pure and needs no uploads.

An item reads, chunks, embeds and indexes one document
(:func:`common.service.ingest.index_document`); a document that cannot be read
fails its own item. The run's progress carries the stage counts (pages read,
chunks made, chunks embedded, chunks indexed) and its fan-in stores them on
``Run.outputs``. A completed re-index run *is* the switch-over: the collection
names that run, and searches use its index once it is completed
(:func:`common.service.collections.current`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from common.core.errors import PermanentError, RetryableError, SluiceError
from common.core.models import Job, Run, SourceFile, TaskResult, WorkItem
from common.core.retrieval import IngestSettings
from common.core.states import TaskStatus
from common.kinds import Estimate, ItemCall, ItemDone, ItemSpec, Kind, register
from common.service import ingest
from common.service.context import Context, Deps

COLUMNS = ["document", "pages", "chunks", "embedded", "indexed", "index_id"]
# The stage counts each item records (``IngestCounts.figures``), totalled in its run's progress.
FIGURES = ("pages_read", "chunks_made", "chunks_embedded", "chunks_indexed")


def prepare(deps: Deps, owner: str, settings: IngestSettings) -> IngestSettings:
    """Refuses a job made by hand: a collection makes its own ingest job and starts its runs."""
    raise PermanentError(
        "an ingest job is made with its search collection",
        code="ingest_job_by_collection",
        hint="Create a collection (POST /v1/collections), then add documents (POST /v1/collections/{id}/documents).",
    )


def fan_out(job: Job, inputs: Sequence[SourceFile], settings: IngestSettings) -> list[ItemSpec]:
    """One item per document the run names (the job's uploads are not this kind's inputs)."""
    if settings.index_id is None or not settings.documents:
        raise PermanentError(
            f"this run of job {job.id} names no documents to ingest",
            code="ingest_nothing_to_do",
            hint="Ingest runs start when documents are added to the collection, re-index runs when its model changes.",
        )
    return [ItemSpec(key=d.id, name=d.name, params={"document_id": d.id}) for d in settings.documents]


def handle(call: ItemCall) -> ItemDone | SluiceError:
    settings = call.settings
    assert isinstance(settings, IngestSettings)
    deps = call.ctx.deps
    document_id = str(call.item.params["document_id"])
    try:
        name, counts = ingest.index_document(deps, settings, document_id)
    except PermanentError as err:
        ingest.record_on_document(deps, document_id, settings.index_id, counts=None, error=err.message)
        return err
    except RetryableError as err:
        if not _retried(call.ctx, err, call.attempt):
            ingest.record_on_document(deps, document_id, settings.index_id, counts=None, error=err.message)
        return err
    ingest.record_on_document(deps, document_id, settings.index_id, counts=counts, error=None)
    row = [name, counts.pages, counts.chunks, counts.embedded, counts.indexed, settings.index_id]
    return ItemDone(
        result=TaskResult(
            columns=COLUMNS, results=[row], method="ingest", pages=counts.pages, figures=counts.figures()
        ),
        model=None if settings.embedding_model == "none" else settings.embedding_model,
    )


def _retried(ctx: Context, err: RetryableError, attempt: int) -> bool:
    """Whether the platform's retry policy tries this item again (else the document's record says it failed)."""
    return ctx.retry_policy.decide(err.kind, attempt, server_delay_s=err.retry_after).retry


def fan_in(run: Run, items: Iterable[WorkItem]) -> dict[str, Any]:
    """The run's stage counts, documents ingested and failed, and which index it filled."""
    totals = dict.fromkeys(FIGURES, 0)
    done = failed = 0
    for item in items:
        if item.status is TaskStatus.FAILED:
            failed += 1
        elif item.status is TaskStatus.COMPLETED and item.result is not None:
            done += 1
            for name in FIGURES:
                totals[name] += item.result.figures.get(name, 0)
    settings = run.kind_settings or {}
    return {
        "purpose": settings.get("purpose", "ingest"),
        "index_id": settings.get("index_id"),
        "documents_ingested": done,
        "documents_failed": failed,
        **totals,
    }


def circuit(ctx: Context, job: Job) -> str | None:
    """The embedding service's breaker (named as the embedders name theirs); lexical-only runs wait on none."""
    model = str(job.kind_settings.get("embedding_model", "none"))
    if model.startswith("vertex:"):
        return "vertex"
    if model.startswith("openai:"):
        return "embeddings"
    return None


def estimate(job: Job, inputs: Sequence[SourceFile], settings: IngestSettings) -> Estimate:
    return Estimate(items=len(settings.documents))


KIND = register(
    Kind(
        name="ingest",
        settings_model=IngestSettings,
        fan_out=fan_out,
        handle=handle,
        fan_in=fan_in,
        figures=FIGURES,
        function="ingest",
        unit="documents",
        circuit=circuit,
        estimate=estimate,
        uses_uploads=False,
        prepare=prepare,
        user_created=False,
    )
)
