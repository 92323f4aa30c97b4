"""Search collections: create, list, change, delete; add and delete documents; search.

A collection belongs to one owner; every function takes the owner and answers
NotFound for another owner's collection, exactly as for a missing one.
Documents are identified by their content hash within a collection, so adding
the same bytes twice is one document, and their chunk ids (hash + position)
make re-ingesting them write nothing.

:func:`search` is the function other services (the research kind) call.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from common.core.chunking import ChunkSettings
from common.core.errors import AlreadyExists, NotFound, PermanentError
from common.core.messages import StartIngest
from common.core.retrieval import NO_EMBEDDINGS, Collection, CollectionDocument, Hit, fuse, snippet
from common.ports.search_index import Scored
from common.ports.store import Filter, Order
from common.service import ids
from common.service.context import Deps, Sender
from common.service.ingest import IngestRun, new_run

COLLECTIONS = "collections"
DOCS = "collection_docs"
MAX_K = 100
# Each signal contributes this many candidates to the fusion.
_CANDIDATES = 50


@dataclass(frozen=True)
class NewDocument:
    name: str
    data: bytes
    mime: str | None = None


def index_id(collection_id: str, generation: int) -> str:
    return f"{collection_id}.g{generation}"


def create_collection(
    deps: Deps,
    owner: str,
    name: str,
    *,
    chunking: ChunkSettings | None = None,
    embedding_model: str = NO_EMBEDDINGS,
) -> Collection:
    deps.embedder(embedding_model)  # an unknown model is refused now, not at the first ingest
    if find_by_name(deps, owner, name) is not None:
        raise AlreadyExists(f"a collection named {name!r} exists", hint="Choose another name or use that one.")
    now = deps.clock.now()
    cid = ids.new_id("col")
    coll = Collection(
        id=cid,
        owner=owner,
        name=name,
        chunking=chunking or ChunkSettings(),
        embedding_model=embedding_model,
        active_index=index_id(cid, 1),
        created_at=now,
        updated_at=now,
    )
    deps.store.create(COLLECTIONS, cid, coll.model_dump(mode="json"))
    return coll


def get_collection(deps: Deps, owner: str, collection_id: str) -> tuple[Collection, str]:
    snap = deps.store.get(COLLECTIONS, collection_id)
    if snap is None or snap.data.get("owner") != owner:
        raise NotFound(f"collection {collection_id} not found")
    return Collection.model_validate(snap.data), snap.version


def find_by_name(deps: Deps, owner: str, name: str) -> Collection | None:
    page = deps.store.query(COLLECTIONS, filters=[Filter("owner", "==", owner), Filter("name", "==", name)], limit=1)
    return Collection.model_validate(page.items[0].data) if page.items else None


def list_collections(deps: Deps, owner: str) -> list[Collection]:
    page = deps.store.query(COLLECTIONS, filters=[Filter("owner", "==", owner)], order_by=[Order("name")], limit=1000)
    return [Collection.model_validate(s.data) for s in page.items]


def change_embedding_model(deps: Deps, sender: Sender, owner: str, collection_id: str, model: str) -> IngestRun | None:
    """Start a re-index into a new index beside the active one; searches keep the old until it completes."""
    coll, version = get_collection(deps, owner, collection_id)
    if model == (coll.building_model or coll.embedding_model):
        return None
    deps.embedder(model)
    old_building = coll.building_index
    generation = coll.generation + 1
    new_index = index_id(coll.id, generation)
    changed = coll.model_copy(
        update={
            "building_index": new_index,
            "building_model": model,
            "generation": generation,
            "updated_at": deps.clock.now(),
        }
    )
    deps.store.set(COLLECTIONS, coll.id, changed.model_dump(mode="json"), if_version=version)
    if old_building is not None:
        deps.search_index.drop(old_building)  # a re-index overtaken by another change
    docs = [d.id for d in list_documents(deps, owner, coll.id)]
    run = new_run(deps, coll, new_index, docs, purpose="reindex")
    sender.send(StartIngest(run_id=run.id))
    return run


def delete_collection(deps: Deps, owner: str, collection_id: str) -> None:
    coll, _ = get_collection(deps, owner, collection_id)
    for index in filter(None, (coll.active_index, coll.building_index)):
        deps.search_index.drop(index)
    for doc in list_documents(deps, owner, coll.id):
        deps.store.delete(DOCS, doc.id)
    deps.store.delete(COLLECTIONS, coll.id)


def add_documents(
    deps: Deps, sender: Sender, owner: str, collection_id: str, documents: Sequence[NewDocument]
) -> tuple[IngestRun | None, list[CollectionDocument]]:
    """Store the documents and start an ingest run over those not yet in the collection.

    Returns the run (None when every document was already there) and the
    collection's record of each document given, in order."""
    coll, _ = get_collection(deps, owner, collection_id)
    now = deps.clock.now()
    records: list[CollectionDocument] = []
    new: list[str] = []
    for d in documents:
        digest = hashlib.sha256(d.data).hexdigest()
        doc_id = f"{coll.id}-{digest[:32]}"
        snap = deps.store.get(DOCS, doc_id)
        if snap is not None:
            known = CollectionDocument.model_validate(snap.data)
            records.append(known)
            if known.status == "pending" and doc_id not in new:
                # Stored by an add that died before its run started (or whose run is still going):
                # ingesting it again is safe, its chunk ids are its content's.
                new.append(doc_id)
            continue
        uri = deps.bucket_uri("uploads", f"collections/{owner}/{coll.id}/{digest}")
        deps.blobs.put_bytes(uri, d.data, content_type=d.mime)
        rec = CollectionDocument(
            id=doc_id,
            owner=owner,
            collection_id=coll.id,
            content_hash=digest,
            name=d.name,
            uri=uri,
            mime=d.mime,
            created_at=now,
            updated_at=now,
        )
        try:
            deps.store.create(DOCS, doc_id, rec.model_dump(mode="json"))
            new.append(doc_id)
        except AlreadyExists:
            pass  # the same bytes twice in one call, or a concurrent add: one document
        records.append(rec)
    if not new:
        return None, records
    # A document joins the index being built too, or it would vanish at the switch.
    run = new_run(deps, coll, coll.active_index, new, purpose="ingest")
    sender.send(StartIngest(run_id=run.id))
    if coll.building_index is not None:
        sender.send(StartIngest(run_id=new_run(deps, coll, coll.building_index, new, purpose="ingest").id))
    return run, records


def list_documents(deps: Deps, owner: str, collection_id: str) -> list[CollectionDocument]:
    out: list[CollectionDocument] = []
    cursor: str | None = None
    while True:
        page = deps.store.query(
            DOCS, filters=[Filter("collection_id", "==", collection_id)], limit=500, start_after=cursor
        )
        out += [CollectionDocument.model_validate(s.data) for s in page.items if s.data.get("owner") == owner]
        cursor = page.next_cursor
        if cursor is None:
            return out


def delete_document(deps: Deps, owner: str, collection_id: str, document_id: str) -> int:
    """Remove a document and its chunks from every index of the collection; how many chunks went."""
    coll, _ = get_collection(deps, owner, collection_id)
    snap = deps.store.get(DOCS, document_id)
    if snap is None or snap.data.get("collection_id") != coll.id:
        raise NotFound(f"document {document_id} not found in collection {collection_id}")
    # The record goes first: an ingest item still in flight finds no document and writes nothing.
    deps.store.delete(DOCS, document_id)
    removed = 0
    for index in filter(None, (coll.active_index, coll.building_index)):
        removed += deps.search_index.delete_document(index, document_id)
    return removed


def search(deps: Deps, owner: str, collection_ids: Sequence[str], query: str, k: int = 10) -> list[Hit]:
    """The best ``k`` chunks of the owner's collections for ``query``.

    BM25 over the words; when the collections have embeddings, cosine over the
    query's vector too, and the two rankings fused by reciprocal rank. Each
    collection is searched in its active index with its active model."""
    if not 1 <= k <= MAX_K:
        raise PermanentError(f"k must be 1..{MAX_K}", code="invalid_request")
    if not query.strip():
        return []
    colls = [get_collection(deps, owner, cid)[0] for cid in collection_ids]
    index = deps.search_index
    indexes = [c.active_index for c in colls]
    lexical = index.lexical(owner, indexes, query, _CANDIDATES)
    rankings: list[list[Scored]] = [lexical]
    by_model: dict[str, list[str]] = {}
    for c in colls:
        by_model.setdefault(c.embedding_model, []).append(c.active_index)
    for model, model_indexes in by_model.items():
        embedder = deps.embedder(model)
        if embedder is None:
            continue
        vector = embedder.embed([query], task="query")[0]
        rankings.append(index.nearest(owner, model_indexes, vector, _CANDIDATES))
    rankings = [r for r in rankings if r]
    if not rankings:
        return []
    chunks = {s.chunk.chunk_id + "@" + s.chunk.collection_id: s for r in rankings for s in r}
    if len(rankings) == 1:
        ranked = [(key(s), s.score) for s in rankings[0]]
    else:
        ranked = fuse([[key(s) for s in r] for r in rankings])
    return [_hit(chunks[cid], score, query) for cid, score in ranked[:k]]


def key(s: Scored) -> str:
    return s.chunk.chunk_id + "@" + s.chunk.collection_id


def _hit(s: Scored, score: float, query: str) -> Hit:
    c = s.chunk
    return Hit(
        chunk_id=c.chunk_id,
        collection_id=c.collection_id,
        document_id=c.document_id,
        document=c.document,
        page=c.page,
        page_end=c.page_end,
        start=c.start,
        end=c.end,
        score=round(score, 6),
        snippet=snippet(c.text, query),
        text=c.text,
    )


def collection_summary(deps: Deps, owner: str, collection_id: str) -> dict[str, Any]:
    coll, _ = get_collection(deps, owner, collection_id)
    return {
        **coll.model_dump(mode="json"),
        "documents": deps.store.count(DOCS, filters=[Filter("collection_id", "==", coll.id)]),
        "chunks": deps.search_index.count(coll.active_index),
    }
