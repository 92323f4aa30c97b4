"""The ingest stage: a run over a collection's documents, one item per document.

``ingest.start`` fans a run out into items (derived ids: run + document, so a
redelivered fan-out creates nothing new) and sends one ``ingest.document``
each. An item reads the document's text (pages read), chunks it (chunks
made), embeds the chunks its index does not hold yet in batches (chunks
embedded) and writes them (chunks indexed). Chunk ids are the document's
content hash plus position, so a redelivery, a crash mid-way or a re-ingest
writes each chunk once. A timed-out index write is retried here a few times,
then left to the bus's redelivery.

Outcomes are written on the item only; the run's counts are derived from its
items while it is open and stored once by the fan-in that completes it
(the rule of docs/ARCHITECTURE.md). A re-index run completes by switching its
collection to the new index and dropping the old one.

This maps onto a job kind (#14) one to one: fan-out = documents, handle =
:func:`ingest_document`'s body, fan-in = the counts (and the switch),
unit = pages.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from common.core.chunking import Chunk, chunk_document
from common.core.errors import PermanentError, PreconditionFailed, RetryableError
from common.core.messages import IngestDocument, StartIngest
from common.core.retrieval import Collection, CollectionDocument, IngestCounts
from common.ports.embedder import batches
from common.ports.search_index import IndexedChunk
from common.ports.store import Filter, Snapshot, Transaction
from common.service.context import Context, Deps

log = logging.getLogger(__name__)

RUNS = "ingest_runs"
ITEMS = "ingest_items"
INDEX_WRITE_ATTEMPTS = 3
WRITE_BATCH = 200  # chunks per index write: bounds a write's time and what a timeout repeats


class IngestRun(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: str
    owner: str
    collection_id: str
    index_id: str
    purpose: Literal["ingest", "reindex"]
    documents: list[str]
    status: Literal["running", "completed"] = "running"
    counts: IngestCounts | None = None  # stored by the fan-in; derived from the items while running
    failed: int = 0
    created_at: datetime
    completed_at: datetime | None = None


class IngestItem(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: str
    run_id: str
    owner: str
    collection_id: str
    document_id: str
    index_id: str
    status: Literal["pending", "done", "failed"] = "pending"
    counts: IngestCounts = Field(default_factory=IngestCounts)
    error: str | None = None


def item_id(run_id: str, document_id: str) -> str:
    return f"{run_id}-{document_id}"


def new_run(
    deps: Deps, coll: Collection, index_id: str, documents: Sequence[str], *, purpose: Literal["ingest", "reindex"]
) -> IngestRun:
    from common.service import ids

    run = IngestRun(
        id=ids.new_id("ing"),
        owner=coll.owner,
        collection_id=coll.id,
        index_id=index_id,
        purpose=purpose,
        documents=list(documents),
        created_at=deps.clock.now(),
    )
    deps.store.create(RUNS, run.id, run.model_dump(mode="json"))
    return run


def start_ingest(msg: StartIngest, ctx: Context) -> None:
    snap = ctx.store.get(RUNS, msg.run_id)
    if snap is None:
        raise PermanentError(f"ingest run {msg.run_id} does not exist", code="not_found")
    run = IngestRun.model_validate(snap.data)
    for doc_id in run.documents:
        iid = item_id(run.id, doc_id)
        if ctx.store.get(ITEMS, iid) is None:
            item = IngestItem(
                id=iid,
                run_id=run.id,
                owner=run.owner,
                collection_id=run.collection_id,
                document_id=doc_id,
                index_id=run.index_id,
            )
            ctx.store.set(ITEMS, iid, item.model_dump(mode="json"))
        # Sent again on a redelivery: the first send may have been lost; the item handler is idempotent.
        ctx.send(IngestDocument(item_id=iid, run_id=run.id))
    if not run.documents:
        _fan_in(ctx.deps, run.id)


def ingest_document(msg: IngestDocument, ctx: Context) -> None:
    snap = ctx.store.get(ITEMS, msg.item_id)
    if snap is None:
        raise PermanentError(f"ingest item {msg.item_id} does not exist", code="not_found")
    item = IngestItem.model_validate(snap.data)
    if item.status == "pending":
        try:
            counts = index_document(ctx.deps, item)
            done = item.model_copy(update={"status": "done", "counts": counts})
        except PermanentError as err:
            log.warning("document not ingested: %s", err)
            done = item.model_copy(update={"status": "failed", "error": str(err)})
        ctx.store.set(ITEMS, item.id, done.model_dump(mode="json"), if_version=snap.version)
        item = done
    _record_on_document(ctx.deps, item)  # again on a redelivery: the first may have died before it
    _fan_in(ctx.deps, item.run_id)


def _record_on_document(deps: Deps, item: IngestItem) -> None:
    """The item's outcome on its document's record, which the API lists (a deleted document is left gone)."""

    def tx(t: Transaction) -> None:
        snap = t.get("collection_docs", item.document_id)
        if snap is None:
            return
        doc = CollectionDocument.model_validate(snap.data)
        changed = doc.model_copy(
            update={
                "status": item.status,
                "error": item.error,
                "counts": item.counts,
                "index_id": item.index_id,
                "updated_at": deps.clock.now(),
            }
        )
        t.set("collection_docs", doc.id, changed.model_dump(mode="json"))

    deps.store.transaction(tx)


def index_document(deps: Deps, item: IngestItem) -> IngestCounts:
    """Text, chunks, embeddings, index writes for one document; the counts of each stage."""
    from common.extraction.doctext import document_pages

    doc_snap = deps.store.get("collection_docs", item.document_id)
    coll_snap = deps.store.get("collections", item.collection_id)
    if doc_snap is None or coll_snap is None:
        return IngestCounts()  # deleted meanwhile: nothing to index
    doc = CollectionDocument.model_validate(doc_snap.data)
    coll = Collection.model_validate(coll_snap.data)
    model = coll.building_model if item.index_id == coll.building_index else coll.embedding_model
    data = deps.blobs.get_bytes(doc.uri, max_bytes=deps.settings.max_document_bytes)
    pages = document_pages(data, name=doc.name, mime=doc.mime, max_pages=deps.settings.max_document_pages)
    chunks = chunk_document(doc.content_hash, pages, coll.chunking)
    index = deps.search_index
    have = index.existing(item.index_id, [c.id for c in chunks])
    todo = [c for c in chunks if c.id not in have]
    embedder = deps.embedder(model or "none")
    # With an embedder each embedded batch is written at once: a 429 on a later batch must not
    # throw away (and pay again for) the vectors already computed.
    size = WRITE_BATCH if embedder is None else min(WRITE_BATCH, embedder.batch_size)
    for batch in batches(todo, size):
        vectors: list[list[float] | None] = [None] * len(batch)
        if embedder is not None:
            vectors = list(embedder.embed([c.text for c in batch], task="document"))
        rows = [_row(item, doc, c, v) for c, v in zip(batch, vectors, strict=True)]
        _write(deps, item.index_id, rows)
    # Every chunk in an index with a model has its vector, whether this attempt or an interrupted
    # earlier one computed it: the count says how far the document got, not what this attempt paid.
    embedded = len(chunks) if embedder is not None else 0
    return IngestCounts(pages=len(pages), chunks=len(chunks), embedded=embedded, indexed=len(chunks))


def _row(item: IngestItem, doc: CollectionDocument, c: Chunk, vector: list[float] | None) -> IndexedChunk:
    return IndexedChunk(
        chunk_id=c.id,
        owner=item.owner,
        collection_id=item.collection_id,
        document_id=doc.id,
        document=doc.name,
        position=c.position,
        page=c.page,
        page_end=c.page_end,
        start=c.start,
        end=c.end,
        text=c.text,
        heading=c.heading,
        vector=vector,
    )


def _write(deps: Deps, index_id: str, rows: Sequence[IndexedChunk]) -> None:
    """An index write, tried again on a timeout; still failing, the bus redelivers the item."""
    for attempt in range(1, INDEX_WRITE_ATTEMPTS + 1):
        try:
            deps.search_index.upsert(index_id, rows)
            return
        except RetryableError as err:
            if err.code != "index_timeout" or attempt == INDEX_WRITE_ATTEMPTS:
                raise
            log.warning("index write timed out (attempt %d of %d); trying again", attempt, INDEX_WRITE_ATTEMPTS)


def progress(deps: Deps, run_id: str) -> tuple[IngestRun, IngestCounts, dict[str, int]]:
    """A run, its stage counts (derived from its items while open) and its items by status."""
    snap = deps.store.get(RUNS, run_id)
    if snap is None:
        raise PermanentError(f"ingest run {run_id} does not exist", code="not_found")
    run = IngestRun.model_validate(snap.data)
    items = [IngestItem.model_validate(s.data) for s in _items(deps, run_id)]
    total = IngestCounts()
    for it in items:
        total = total + it.counts
    statuses = {s: sum(1 for it in items if it.status == s) for s in ("pending", "done", "failed")}
    statuses["pending"] += len(run.documents) - len(items)  # not fanned out yet
    return run, (run.counts or total), statuses


def _items(deps: Deps, run_id: str) -> list[Snapshot]:
    out: list[Snapshot] = []
    cursor: str | None = None
    while True:
        page = deps.store.query(ITEMS, filters=[Filter("run_id", "==", run_id)], limit=1000, start_after=cursor)
        out += page.items
        cursor = page.next_cursor
        if cursor is None:
            return out


def _fan_in(deps: Deps, run_id: str) -> None:
    """Complete the run once no item is pending; exactly one caller's compare-and-set wins."""
    open_items = deps.store.query(
        ITEMS, filters=[Filter("run_id", "==", run_id), Filter("status", "==", "pending")], limit=1
    )
    if open_items.items:
        return
    snap = deps.store.get(RUNS, run_id)
    if snap is None:
        return
    run = IngestRun.model_validate(snap.data)
    if run.status == "completed":
        _switch(deps, run)  # the winner may have died before switching
        return
    _, counts, statuses = progress(deps, run_id)
    if statuses["pending"]:
        return
    done = run.model_copy(
        update={"status": "completed", "counts": counts, "failed": statuses["failed"], "completed_at": deps.clock.now()}
    )
    try:
        deps.store.set(RUNS, run.id, done.model_dump(mode="json"), if_version=snap.version)
    except PreconditionFailed:
        return  # another item's fan-in completed it
    _switch(deps, done)


def _switch(deps: Deps, run: IngestRun) -> None:
    """A completed re-index makes its index the active one, then drops the old one."""
    if run.purpose != "reindex":
        return

    def tx(t: Transaction) -> str | None:
        snap = t.get("collections", run.collection_id)
        if snap is None:
            return None
        coll = Collection.model_validate(snap.data)
        if coll.building_index != run.index_id:
            return None
        old = coll.active_index
        switched = coll.model_copy(
            update={
                "active_index": run.index_id,
                "embedding_model": coll.building_model or coll.embedding_model,
                "building_index": None,
                "building_model": None,
                "updated_at": deps.clock.now(),
            }
        )
        t.set("collections", coll.id, switched.model_dump(mode="json"))
        return old

    old = deps.store.transaction(tx)
    if old is not None and old != run.index_id:
        deps.search_index.drop(old)
