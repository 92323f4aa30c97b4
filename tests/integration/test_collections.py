"""Search collections on the embedded backend, through the real runtime: ingest runs of the
collection's ``ingest`` job, re-ingest, deletion, per-user isolation, re-index switch-over,
a timed-out index write."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from common import kinds
from common.core.chunking import ChunkSettings
from common.core.errors import ErrorKind, NotFound, PreconditionFailed, RetryableError
from common.core.models import Run, WorkItem
from common.core.states import RunStatus
from common.ports.store import Filter
from common.service import collections as cols
from common.service import ids, ingest, repo
from tests.support import Pipeline, make_pipeline


@pytest.fixture
def p(tmp_path: Path) -> Pipeline:
    return make_pipeline(tmp_path)


def _doc(n: int) -> cols.NewDocument:
    text = (
        f"# Invoice {n}\n\nInvoice number INV-{n:05d} from Seller {n % 7} GmbH dated 2024-01-{n % 28 + 1:02d}.\n\n"
        + " ".join(f"Line {i}: {n * 3 + i} units of widget model W{i} for the project." for i in range(30))
    )
    return cols.NewDocument(name=f"inv{n}.md", data=text.encode(), mime=None)


def _ingest(p: Pipeline, owner: str, coll_id: str, docs: list[cols.NewDocument]) -> Run | None:
    run, _ = cols.add_documents(p.deps, p.sender, owner, coll_id, docs)
    p.drain()
    return run


def _run(p: Pipeline, run_id: str) -> Run:
    return repo.require(p.deps.store, Run, run_id)[0]


def _items(p: Pipeline, run_id: str) -> list[WorkItem]:
    return list(repo.scan(p.deps.store, WorkItem, filters=[Filter("run_id", "==", run_id)]))


def test_a_document_is_read_chunked_and_indexed_with_each_stages_count(p: Pipeline) -> None:
    coll = cols.create_collection(p.deps, "alice", "invoices", chunking=ChunkSettings(max_tokens=64, overlap_tokens=8))
    run = _ingest(p, "alice", coll.id, [_doc(1)])
    assert run is not None
    done = _run(p, run.id)
    assert (done.kind, done.job_id, done.status) == ("ingest", coll.job_id, RunStatus.COMPLETED)
    assert (done.counters.completed, done.counters.failed) == (1, 0)
    out = done.outputs or {}
    assert out["pages_read"] == 1
    assert out["chunks_made"] > 3
    assert out["chunks_indexed"] == out["chunks_made"] == p.deps.search_index.count(coll.active_index)
    assert out["chunks_embedded"] == 0  # no embedding model: lexical only
    hits = cols.search(p.deps, "alice", [coll.id], "INV-00001", k=3)
    assert hits[0].document == "inv1.md"
    assert hits[0].page == 1
    assert "INV-00001" in hits[0].snippet


def test_re_ingesting_an_unchanged_document_creates_nothing(p: Pipeline) -> None:
    coll = cols.create_collection(p.deps, "alice", "c")
    _ingest(p, "alice", coll.id, [_doc(1), _doc(2)])
    before = p.deps.search_index.count(coll.active_index)
    run = _ingest(p, "alice", coll.id, [_doc(1), _doc(2)])
    assert run is None
    assert p.deps.search_index.count(coll.active_index) == before


def test_a_redelivered_document_writes_no_chunk_twice(p: Pipeline) -> None:
    coll = cols.create_collection(p.deps, "alice", "c")
    run = _ingest(p, "alice", coll.id, [_doc(3)])
    assert run is not None
    before = p.deps.search_index.count(coll.active_index)
    item = ids.task_id(run.id, f"{coll.id}-{__import__('hashlib').sha256(_doc(3).data).hexdigest()[:32]}")
    snap = p.deps.store.get(WorkItem.collection, item)
    assert snap is not None
    p.deps.store.set(WorkItem.collection, item, {**snap.data, "status": "pending"})  # as if the ack was lost
    p.sender.send(kinds.get("ingest").item(WorkItem.from_doc(snap.data)))
    p.drain()
    assert p.deps.search_index.count(coll.active_index) == before
    assert _run(p, run.id).status is RunStatus.COMPLETED


def test_deleting_a_document_removes_its_chunks(p: Pipeline) -> None:
    coll = cols.create_collection(p.deps, "alice", "c")
    _, records = cols.add_documents(p.deps, p.sender, "alice", coll.id, [_doc(1), _doc(2)])
    p.drain()
    removed = cols.delete_document(p.deps, "alice", coll.id, records[0].id)
    assert removed > 0
    assert all(h.document == "inv2.md" for h in cols.search(p.deps, "alice", [coll.id], "invoice widget", k=50))


def test_searches_see_only_the_owners_collections(p: Pipeline) -> None:
    alice = cols.create_collection(p.deps, "alice", "mine")
    bob = cols.create_collection(p.deps, "bob", "mine")
    _ingest(p, "alice", alice.id, [_doc(1)])
    _ingest(p, "bob", bob.id, [_doc(2)])
    with pytest.raises(NotFound):
        cols.search(p.deps, "alice", [bob.id], "invoice", k=5)
    assert {h.document for h in cols.search(p.deps, "alice", [alice.id], "invoice", k=50)} == {"inv1.md"}
    # The index itself filters by owner too, whatever index ids it is handed.
    assert p.deps.search_index.lexical("alice", [bob.active_index], "invoice", 5) == []


def test_a_changed_embedding_model_builds_a_new_index_and_switches_only_when_complete(
    p: Pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    coll = cols.create_collection(p.deps, "alice", "c")
    _ingest(p, "alice", coll.id, [_doc(n) for n in range(5)])
    run = cols.change_embedding_model(p.deps, p.sender, "alice", coll.id, "hashing-64")
    assert run is not None
    new_index = (run.kind_settings or {})["index_id"]
    building = cols.get_collection(p.deps, "alice", coll.id)[0]
    assert building.active_index == coll.active_index
    assert (building.building_index, building.building_run_id) == (new_index, run.id)
    seen: list[tuple[str, str]] = []
    real = ingest.index_document

    def observed(deps: Any, settings: Any, document_id: str) -> Any:
        # Before every document of the re-index: searches still read the old, complete index.
        mid = cols.get_collection(p.deps, "alice", coll.id)[0]
        seen.append((mid.active_index, cols.search(p.deps, "alice", [coll.id], "INV-00003", k=1)[0].document))
        return real(deps, settings, document_id)

    monkeypatch.setattr(ingest, "index_document", observed)
    p.drain()
    assert seen == [(coll.active_index, "inv3.md")] * 5
    after = cols.get_collection(p.deps, "alice", coll.id)[0]
    assert after.active_index == new_index
    assert after.embedding_model == "hashing-64"
    assert (after.building_index, after.building_run_id) == (None, None)
    assert p.deps.search_index.count(coll.active_index) == 0  # the old index is dropped
    out = _run(p, run.id).outputs or {}
    assert out["purpose"] == "reindex"
    assert out["chunks_embedded"] == out["chunks_made"] > 0
    assert cols.search(p.deps, "alice", [coll.id], "INV-00003", k=1)[0].document == "inv3.md"


def test_a_timed_out_index_write_is_tried_again(p: Pipeline, monkeypatch: pytest.MonkeyPatch) -> None:
    coll = cols.create_collection(p.deps, "alice", "c")
    index = p.deps.search_index
    real = index.upsert
    calls: list[int] = []

    def flaky(index_id: str, rows: Any) -> None:
        calls.append(len(rows))
        if len(calls) == 1:
            raise RetryableError("the search index write timed out", kind=ErrorKind.NETWORK, code="index_timeout")
        real(index_id, rows)

    monkeypatch.setattr(index, "upsert", flaky)
    run = _ingest(p, "alice", coll.id, [_doc(1)])
    assert run is not None
    assert len(calls) == 2
    assert _run(p, run.id).status is RunStatus.COMPLETED
    assert index.count(coll.active_index) > 0


class _Killed(Exception):
    pass


class _DyingSender:
    def send(self, *_a: Any, **_kw: Any) -> None:
        raise _Killed


def test_documents_stored_by_an_add_that_died_before_its_run_started_are_ingested_by_the_next_add(
    p: Pipeline,
) -> None:
    coll = cols.create_collection(p.deps, "alice", "c")
    with pytest.raises(_Killed):
        cols.add_documents(p.deps, _DyingSender(), "alice", coll.id, [_doc(1), _doc(2)])  # type: ignore[arg-type]
    run = _ingest(p, "alice", coll.id, [_doc(1), _doc(2)])
    assert run is not None
    done = _run(p, run.id)
    assert done.counters.completed == 2
    assert p.deps.search_index.count(coll.active_index) == (done.outputs or {})["chunks_made"] > 0
    assert [d.status for d in cols.list_documents(p.deps, "alice", coll.id)] == ["done", "done"]


def test_a_re_index_that_listed_the_documents_before_an_add_is_refused_and_its_repeat_includes_them(
    p: Pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    coll = cols.create_collection(p.deps, "alice", "c")
    _ingest(p, "alice", coll.id, [_doc(1), _doc(2)])
    real_list = cols.list_documents

    def listed_then_added(deps: Any, owner: str, collection_id: str) -> Any:
        # The re-index has listed the documents; an add commits before the re-index records its run.
        listed = real_list(deps, owner, collection_id)
        monkeypatch.setattr(cols, "list_documents", real_list)
        cols.add_documents(p.deps, p.sender, "alice", coll.id, [_doc(9)])
        return listed

    monkeypatch.setattr(cols, "list_documents", listed_then_added)
    with pytest.raises(PreconditionFailed):
        cols.change_embedding_model(p.deps, p.sender, "alice", coll.id, "hashing-64")
    assert cols.change_embedding_model(p.deps, p.sender, "alice", coll.id, "hashing-64") is not None
    p.drain()
    after = cols.get_collection(p.deps, "alice", coll.id)[0]
    assert (after.embedding_model, after.building_run_id) == ("hashing-64", None)
    assert cols.search(p.deps, "alice", [coll.id], "INV-00009", k=1)[0].document == "inv9.md"
