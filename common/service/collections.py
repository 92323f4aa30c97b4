"""Search collections: create, list, change, delete; add and delete documents; search.

A collection belongs to one owner; every function takes the owner and answers
NotFound for another owner's collection, exactly as for a missing one.
Documents are identified by their content hash within a collection, so adding
the same bytes twice is one document, and their chunk ids (hash + position)
make re-ingesting them write nothing.

Each collection has one job of kind ``ingest`` (:mod:`common.kinds.ingest`),
created in the same transaction and deleted with it; adding documents and
changing the embedding model start runs of that job, which the platform runs
like any other kind's. A re-index run builds a new index beside the active
one; the collection names that run, and :func:`current` makes the new index
the active one once the run is completed (and drops the old), on whichever
read comes first, idempotently.

:func:`search` is the function other services (the research kind) call.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from common.core.chunking import ChunkSettings
from common.core.errors import AlreadyExists, NotFound, PermanentError, PreconditionFailed
from common.core.models import Job, Run
from common.core.retrieval import (
    NO_EMBEDDINGS,
    Collection,
    CollectionDocument,
    DocumentRef,
    Hit,
    IngestSettings,
    fuse,
    snippet,
)
from common.core.states import RunStatus
from common.ports.search_index import Scored
from common.ports.store import Filter, Order, Transaction
from common.service import control, deletion, ids, jobs, repo
from common.service.context import Deps, Sender
from common.service.effects import EffectGuard
from common.service.ingest import COLLECTIONS, DOCS

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


class _WithCollection:
    """Creates the collection in the transaction that creates its job (so neither exists without the other)."""

    def __init__(self, make: Callable[[str], Collection]) -> None:
        self.make = make
        self.made: Collection | None = None

    def check(self, t: Transaction) -> None:
        return None

    def record(self, t: Transaction, job: Job) -> None:
        self.made = self.make(job.id)
        t.create(COLLECTIONS, self.made.id, self.made.model_dump(mode="json"))


def create_collection(
    deps: Deps,
    owner: str,
    name: str,
    *,
    chunking: ChunkSettings | None = None,
    embedding_model: str = NO_EMBEDDINGS,
) -> Collection:
    """A new collection with its job of kind ``ingest`` (same owner; it allows concurrent runs, exports nothing)."""
    deps.embedder(embedding_model)  # an unknown model is refused now, not at the first ingest
    if find_by_name(deps, owner, name) is not None:
        raise AlreadyExists(f"a collection named {name!r} exists", hint="Choose another name or use that one.")
    now = deps.clock.now()
    cid = ids.new_id("col")
    guard = _WithCollection(
        lambda job_id: Collection(
            id=cid,
            owner=owner,
            name=name,
            job_id=job_id,
            chunking=chunking or ChunkSettings(),
            embedding_model=embedding_model,
            active_index=index_id(cid, 1),
            created_at=now,
            updated_at=now,
        )
    )
    jobs.create_job(
        deps,
        owner=owner,
        name=name,
        fields=[],
        exports=[],  # an ingest run's output is its index, not a table
        concurrent_runs=True,  # an ingest and a re-index of one collection go at once
        kind="ingest",
        kind_settings={"collection_id": cid},
        guard=guard,
    )
    assert guard.made is not None
    return guard.made


def get_collection(deps: Deps, owner: str, collection_id: str) -> tuple[Collection, str]:
    """The owner's collection as it stands now (a completed re-index switched: :func:`current`), and its version."""
    snap = deps.store.get(COLLECTIONS, collection_id)
    if snap is None or snap.data.get("owner") != owner:
        raise NotFound(f"collection {collection_id} not found")
    coll = Collection.model_validate(snap.data)
    if current(deps, coll) is coll:
        return coll, snap.version
    # It was caught up (by this reader or another): read it again, with the version that goes with it.
    return get_collection(deps, owner, collection_id)


def current(deps: Deps, coll: Collection) -> Collection:
    """``coll`` caught up with its re-index run: switched to the new index once that run is completed
    (the old index dropped), given up when it was cancelled or failed (its index dropped).

    The run's completion (the platform's fan-in) is the switch; this only makes the record say so,
    in a transaction that checks the record still names that run, so any number of readers may race.
    """
    run_id = coll.building_run_id
    if run_id is None:
        return coll
    found = repo.get(deps.store, Run, run_id)
    status = None if found is None else found[0].status
    if status in (RunStatus.PENDING, RunStatus.RUNNING, RunStatus.PAUSED, RunStatus.NEEDS_REVIEW):
        return coll
    switch = status is RunStatus.COMPLETED
    now = deps.clock.now()

    def tx(t: Transaction) -> tuple[Collection, str | None]:
        snap = t.get(COLLECTIONS, coll.id)
        if snap is None:
            return coll, None
        stored = Collection.model_validate(snap.data)
        if stored.building_run_id != run_id:
            return stored, None  # another reader caught it up
        cleared: dict[str, Any] = {
            "building_index": None,
            "building_model": None,
            "building_run_id": None,
            "updated_at": now,
        }
        if switch:
            cleared |= {"active_index": stored.building_index, "embedding_model": stored.building_model}
        caught_up = stored.model_copy(update=cleared)
        t.set(COLLECTIONS, stored.id, caught_up.model_dump(mode="json"))
        return caught_up, stored.active_index if switch else stored.building_index

    caught_up, dropped = deps.store.transaction(tx)
    if dropped is not None and dropped != caught_up.active_index:
        deps.search_index.drop(dropped)
    return caught_up


def find_by_name(deps: Deps, owner: str, name: str) -> Collection | None:
    page = deps.store.query(COLLECTIONS, filters=[Filter("owner", "==", owner), Filter("name", "==", name)], limit=1)
    return Collection.model_validate(page.items[0].data) if page.items else None


def list_collections(deps: Deps, owner: str) -> list[Collection]:
    page = deps.store.query(COLLECTIONS, filters=[Filter("owner", "==", owner)], order_by=[Order("name")], limit=1000)
    return [current(deps, Collection.model_validate(s.data)) for s in page.items]


class _Reindex:
    """Records the re-index on the collection in the transaction that records its run, while the
    collection is still as read (a concurrent change fails this one: PreconditionFailed, 409)."""

    def __init__(self, coll: Collection, version: str, new_index: str, model: str, now: datetime) -> None:
        self.coll, self.version, self.new_index, self.model, self.now = coll, version, new_index, model, now

    def check(self, t: Transaction) -> None:
        snap = t.get(COLLECTIONS, self.coll.id)
        if snap is None or snap.version != self.version:
            raise PreconditionFailed(
                f"collection {self.coll.id} changed meanwhile", hint="Read it again and repeat the change."
            )

    def record(self, t: Transaction, run: Run) -> None:
        changed = self.coll.model_copy(
            update={
                "building_index": self.new_index,
                "building_model": self.model,
                "building_run_id": run.id,
                "generation": self.coll.generation + 1,
                "updated_at": self.now,
            }
        )
        t.set(COLLECTIONS, changed.id, changed.model_dump(mode="json"))


def change_embedding_model(deps: Deps, sender: Sender, owner: str, collection_id: str, model: str) -> Run | None:
    """Start a re-index run into a new index beside the active one; searches keep the old until it completes."""
    coll, version = get_collection(deps, owner, collection_id)
    if model == (coll.building_model or coll.embedding_model):
        return None
    deps.embedder(model)
    new_index = index_id(coll.id, coll.generation + 1)
    docs = [DocumentRef(id=d.id, name=d.name) for d in list_documents(deps, owner, coll.id)]
    settings = IngestSettings(
        collection_id=coll.id, purpose="reindex", index_id=new_index, embedding_model=model, documents=docs
    )
    if docs:
        run = _start(deps, sender, coll, settings, guard=_Reindex(coll, version, new_index, model, deps.clock.now()))
    else:
        # Nothing to re-index: the new model is the collection's at once.
        run = None
        now = deps.clock.now()
        switched = coll.model_copy(
            update={
                "embedding_model": model,
                "active_index": new_index,
                "generation": coll.generation + 1,
                **{"building_index": None, "building_model": None, "building_run_id": None, "updated_at": now},
            }
        )
        deps.store.set(COLLECTIONS, coll.id, switched.model_dump(mode="json"), if_version=version)
        deps.search_index.drop(coll.active_index)
    if coll.building_run_id is not None:
        # A re-index overtaken by another change: stop it and drop what it built.
        _stop(deps, owner, coll.building_run_id)
        if coll.building_index is not None:
            deps.search_index.drop(coll.building_index)
    return run


def _start(
    deps: Deps, sender: Sender, coll: Collection, settings: IngestSettings, *, guard: EffectGuard[Run] | None = None
) -> Run | None:
    """A run of the collection's job over the documents ``settings`` names (None: it names none)."""
    if not settings.documents:
        return None
    job = jobs.require_job(deps, coll.job_id, owner=coll.owner)
    return jobs.request_run(deps, sender, job, kind_settings=settings.model_dump(mode="json"), guard=guard)


def _stop(deps: Deps, owner: str, run_id: str) -> None:
    found = repo.get(deps.store, Run, run_id)
    if found is not None and found[0].status in jobs.ACTIVE_RUN_STATES:
        control.cancel_run(deps, run_id, owner=owner)


def delete_collection(deps: Deps, owner: str, collection_id: str) -> None:
    """The collection with its job (runs cancelled first), documents, their bytes and its indexes.

    The record goes last, so a delete that failed midway can be repeated."""
    coll, _ = get_collection(deps, owner, collection_id)
    job = repo.get(deps.store, Job, coll.job_id)
    if job is not None:
        for run in list(repo.scan(deps.store, Run, filters=[Filter("job_id", "==", coll.job_id)])):
            _stop(deps, owner, run.id)
    for index in filter(None, (coll.active_index, coll.building_index)):
        deps.search_index.drop(index)
    for doc in list_documents(deps, owner, coll.id):
        deps.blobs.delete(doc.uri)
        deps.store.delete(DOCS, doc.id)
    if job is not None:
        deletion.delete_job(deps, job[0], owners=[owner])
    deps.store.delete(COLLECTIONS, coll.id)


def add_documents(
    deps: Deps, sender: Sender, owner: str, collection_id: str, documents: Sequence[NewDocument]
) -> tuple[Run | None, list[CollectionDocument]]:
    """Store the documents and start an ingest run over those not yet in the collection.

    Returns the run into the active index (None when every document was
    already there) and the collection's record of each document given, in
    order. During a re-index a second run puts them into the index being built."""
    coll, _ = get_collection(deps, owner, collection_id)
    now = deps.clock.now()
    records: list[CollectionDocument] = []
    new: dict[str, str] = {}  # id -> name
    for d in documents:
        digest = hashlib.sha256(d.data).hexdigest()
        doc_id = f"{coll.id}-{digest[:32]}"
        snap = deps.store.get(DOCS, doc_id)
        if snap is not None:
            known = CollectionDocument.model_validate(snap.data)
            records.append(known)
            if known.status == "pending":
                # Stored by an add that died before its run started (or whose run is still going):
                # ingesting it again is safe, its chunk ids are its content's.
                new.setdefault(doc_id, known.name)
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
            new[doc_id] = rec.name
        except AlreadyExists:
            pass  # the same bytes twice in one call, or a concurrent add: one document
        records.append(rec)
    if not new:
        return None, records
    refs = [DocumentRef(id=i, name=n) for i, n in new.items()]
    for _ in range(_REPLANS):
        try:
            run = _start(
                deps, sender, coll, _into(coll, coll.active_index, coll.embedding_model, refs), guard=_SameIndexes(coll)
            )
        except _Replan:
            coll, _ = get_collection(deps, owner, collection_id)  # a re-index started or switched meanwhile
            continue
        if run is not None and coll.building_index is not None and coll.building_model is not None:
            # A document joins the index being built too, or it would vanish at the switch.
            _start(deps, sender, coll, _into(coll, coll.building_index, coll.building_model, refs))
        return run, records
    raise PreconditionFailed(
        f"collection {collection_id} kept changing while documents were added",
        hint="Add the documents again: they are stored, and the next add ingests them.",
    )


# How often an add plans its runs again when the collection's indexes changed under it.
_REPLANS = 5


class _Replan(Exception):
    """The collection's indexes changed between reading it and recording the add's run."""


class _SameIndexes:
    """An add's run is recorded only while the collection still has the indexes its runs were planned for, and
    it touches the collection: a re-index that read the collection (and listed its documents) before this add
    then fails its own check (PreconditionFailed, 409) instead of building an index without these documents."""

    def __init__(self, planned: Collection) -> None:
        self.planned = planned
        self.stored: Collection | None = None

    def check(self, t: Transaction) -> None:
        snap = t.get(COLLECTIONS, self.planned.id)
        if snap is None:
            raise NotFound(f"collection {self.planned.id} not found")
        self.stored = Collection.model_validate(snap.data)
        planned = (self.planned.active_index, self.planned.building_index)
        if (self.stored.active_index, self.stored.building_index) != planned:
            raise _Replan

    def record(self, t: Transaction, run: Run) -> None:
        assert self.stored is not None
        touched = self.stored.model_copy(update={"updated_at": run.created_at})
        t.set(COLLECTIONS, touched.id, touched.model_dump(mode="json"))


def _into(coll: Collection, index: str, model: str, refs: list[DocumentRef]) -> IngestSettings:
    return IngestSettings(
        collection_id=coll.id, purpose="ingest", index_id=index, embedding_model=model, documents=refs
    )


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
    colls = [get_collection(deps, owner, cid)[0] for cid in collection_ids]  # a completed re-index switched
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
