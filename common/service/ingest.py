"""One document of a search collection into one index: text, chunks, embeddings, index writes.

The ``ingest`` job kind (:mod:`common.kinds.ingest`) calls :func:`index_document`
for each item of a collection's ingest or re-index run. It reads the
document's text (pages read), chunks it (chunks made), embeds the chunks the
index does not hold yet in the embedder's batches (chunks embedded) and
writes them (chunks indexed). Chunk ids are the document's content hash plus
position, so a redelivery, a crash mid-way or a re-ingest writes each chunk
once. A timed-out index write is retried here a few times, then left to the
platform's retry policy.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from common.core.chunking import Chunk, chunk_document
from common.core.errors import RetryableError
from common.core.retrieval import Collection, CollectionDocument, IngestCounts, IngestSettings
from common.ports.embedder import batches
from common.ports.search_index import IndexedChunk
from common.ports.store import Transaction
from common.service.context import Deps

log = logging.getLogger(__name__)

COLLECTIONS = "collections"
DOCS = "collection_docs"
INDEX_WRITE_ATTEMPTS = 3
WRITE_BATCH = 200  # chunks per index write: bounds a write's time and what a timeout repeats


def index_document(deps: Deps, settings: IngestSettings, document_id: str) -> tuple[str, IngestCounts]:
    """Text, chunks, embeddings, index writes for one document into the run's index: its name and each stage's count.

    A document (or collection) deleted meanwhile is nothing to index: zero counts.
    """
    from common.extraction.doctext import document_pages

    doc_snap = deps.store.get(DOCS, document_id)
    coll_snap = deps.store.get(COLLECTIONS, settings.collection_id)
    index_id = settings.index_id
    if doc_snap is None or coll_snap is None or index_id is None:
        return document_id, IngestCounts()
    doc = CollectionDocument.model_validate(doc_snap.data)
    coll = Collection.model_validate(coll_snap.data)
    data = deps.blobs.get_bytes(doc.uri, max_bytes=deps.settings.max_document_bytes)
    pages = document_pages(data, name=doc.name, mime=doc.mime, max_pages=deps.settings.max_document_pages)
    chunks = chunk_document(doc.content_hash, pages, coll.chunking)
    index = deps.search_index
    have = index.existing(index_id, [c.id for c in chunks])
    todo = [c for c in chunks if c.id not in have]
    embedder = deps.embedder(settings.embedding_model)
    # With an embedder each embedded batch is written at once: a 429 on a later batch must not
    # throw away (and pay again for) the vectors already computed.
    size = WRITE_BATCH if embedder is None else min(WRITE_BATCH, embedder.batch_size)
    for batch in batches(todo, size):
        vectors: list[list[float] | None] = [None] * len(batch)
        if embedder is not None:
            vectors = list(embedder.embed([c.text for c in batch], task="document"))
        rows = [_row(doc, c, v) for c, v in zip(batch, vectors, strict=True)]
        _write(deps, index_id, rows)
    # Every chunk in an index with a model has its vector, whether this attempt or an interrupted
    # earlier one computed it: the count says how far the document got, not what this attempt paid.
    embedded = len(chunks) if embedder is not None else 0
    return doc.name, IngestCounts(pages=len(pages), chunks=len(chunks), embedded=embedded, indexed=len(chunks))


def record_on_document(
    deps: Deps, document_id: str, index_id: str | None, *, counts: IngestCounts | None, error: str | None
) -> None:
    """An item's outcome on its document's record, which the API lists (a deleted document is left gone)."""

    def tx(t: Transaction) -> None:
        snap = t.get(DOCS, document_id)
        if snap is None:
            return
        doc = CollectionDocument.model_validate(snap.data)
        changed = doc.model_copy(
            update={
                "status": "failed" if error is not None else "done",
                "error": error,
                "counts": counts or IngestCounts(),
                "index_id": index_id,
                "updated_at": deps.clock.now(),
            }
        )
        t.set(DOCS, doc.id, changed.model_dump(mode="json"))

    deps.store.transaction(tx)


def _row(doc: CollectionDocument, c: Chunk, vector: list[float] | None) -> IndexedChunk:
    return IndexedChunk(
        chunk_id=c.id,
        owner=doc.owner,
        collection_id=doc.collection_id,
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
    """An index write, tried again on a timeout; still failing, the item is retried by the platform's policy."""
    for attempt in range(1, INDEX_WRITE_ATTEMPTS + 1):
        try:
            deps.search_index.upsert(index_id, rows)
            return
        except RetryableError as err:
            if err.code != "index_timeout" or attempt == INDEX_WRITE_ATTEMPTS:
                raise
            log.warning("index write timed out (attempt %d of %d); trying again", attempt, INDEX_WRITE_ATTEMPTS)
