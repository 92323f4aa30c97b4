"""The search index contract: what every ``SearchIndex`` backend must do.

Each test uses only the port, so it runs against the embedded adapter (SQLite
FTS5 + numpy) and the Firestore adapter on the Firestore emulator (marked
``emulator``; the emulator answers ``find_nearest`` with owner/index
pre-filters, so the vector search is tested there too).
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from common.adapters.local.sqlite_index import SqliteSearchIndex
from common.ports.search_index import IndexedChunk, Scored, SearchIndex

pytestmark = pytest.mark.timeout(120)

_numbers = itertools.count()


@pytest.fixture(params=["local", pytest.param("gcp", marks=pytest.mark.emulator)])
def index(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SearchIndex]:
    if request.param == "local":
        opened = SqliteSearchIndex(tmp_path / "search.db")
        yield opened
        opened.close()
        return
    from common.adapters.gcp.firestore_index import FirestoreSearchIndex

    emu = request.getfixturevalue("emulators")
    # One emulator for the session; each test gets a collection of its own.
    yield FirestoreSearchIndex(emu.project, collection_prefix=f"t{os.getpid()}x{next(_numbers)}_")


def chunk(
    i: int,
    text: str,
    *,
    owner: str = "alice",
    doc: str = "d1",
    vector: list[float] | None = None,
    heading: str | None = None,
) -> IndexedChunk:
    return IndexedChunk(
        chunk_id=f"c{i}", owner=owner, collection_id="col", document_id=doc, document=f"{doc}.pdf",
        position=i, page=i + 1, page_end=i + 1, start=10 * i, end=10 * i + len(text), text=text,
        heading=heading, vector=vector,
    )  # fmt: skip


def ids(hits: list[Scored]) -> list[str]:
    return [h.chunk.chunk_id for h in hits]


def test_an_upserted_chunk_comes_back_with_its_place_and_text(index: SearchIndex) -> None:
    written = chunk(3, "The turbine blade inspection report", heading="Findings")
    index.upsert("ix", [written])
    (hit,) = index.lexical("alice", ["ix"], "turbine", 5)
    assert hit.chunk == dataclasses.replace(written, vector=None)
    assert hit.score > 0


def test_writing_a_chunk_again_replaces_it(index: SearchIndex) -> None:
    index.upsert("ix", [chunk(1, "old words about gearboxes")])
    index.upsert("ix", [chunk(1, "new words about propellers")])
    assert index.count("ix") == 1
    assert index.lexical("alice", ["ix"], "gearboxes", 5) == []
    assert ids(index.lexical("alice", ["ix"], "propellers", 5)) == ["c1"]


def test_existing_names_the_chunks_the_index_holds(index: SearchIndex) -> None:
    index.upsert("ix", [chunk(1, "one"), chunk(2, "two")])
    index.upsert("other", [chunk(3, "three")])
    assert index.existing("ix", ["c1", "c2", "c3", "c9"]) == {"c1", "c2"}


def test_deleting_a_document_removes_its_chunks_only(index: SearchIndex) -> None:
    index.upsert("ix", [chunk(1, "alpha", doc="a"), chunk(2, "alpha beta", doc="a"), chunk(3, "alpha", doc="b")])
    index.upsert("ix2", [chunk(4, "alpha", doc="a")])
    assert index.delete_document("ix", "a") == 2
    assert index.count("ix") == 1
    assert index.count("ix2") == 1
    assert ids(index.lexical("alice", ["ix"], "alpha", 5)) == ["c3"]
    assert index.delete_document("ix", "a") == 0


def test_dropping_an_index_leaves_the_others(index: SearchIndex) -> None:
    index.upsert("old", [chunk(i, f"word {i}") for i in range(5)])
    index.upsert("new", [chunk(1, "word")])
    index.drop("old")
    assert index.count("old") == 0
    assert index.count("new") == 1


def test_lexical_ranks_the_chunk_with_more_of_the_rare_words_first(index: SearchIndex) -> None:
    common = [chunk(i, f"the report page {i} of the maintenance manual") for i in range(20)]
    index.upsert("ix", [*common, chunk(50, "hydraulic pump pressure drop in the maintenance report")])
    hits = index.lexical("alice", ["ix"], "hydraulic pressure report", 3)
    assert ids(hits)[0] == "c50"
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    assert len(hits) == 3  # any of the words matches


def test_lexical_folds_case_and_diacritics(index: SearchIndex) -> None:
    index.upsert("ix", [chunk(1, "Überprüfung der Zürcher Anlage")])
    assert ids(index.lexical("alice", ["ix"], "zurcher UBERPRUFUNG", 5)) == ["c1"]


def test_a_code_in_the_query_ranks_its_chunks_above_those_with_its_words(index: SearchIndex) -> None:
    wordy = [chunk(i, "invoice number summary: the invoice number is on every invoice") for i in range(3)]
    coded = [chunk(10 + i, f"Seite {i} Beleg-Nr: R87654321012345") for i in range(2)]
    index.upsert("ix", [*wordy, *coded])
    hits = index.lexical("alice", ["ix"], "invoice number R87654321012345", 5)
    assert set(ids(hits)[:2]) == {"c10", "c11"}
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


def test_reads_return_only_the_owners_chunks(index: SearchIndex) -> None:
    index.upsert("ix", [chunk(1, "shared secret words", vector=[1.0, 0.0])])
    index.upsert("ix", [chunk(2, "shared secret words", owner="mallory", vector=[1.0, 0.0])])
    assert ids(index.lexical("alice", ["ix"], "secret", 5)) == ["c1"]
    assert [h.chunk.owner for h in index.nearest("mallory", ["ix"], [1.0, 0.0], 5)] == ["mallory"]
    assert index.lexical("eve", ["ix"], "secret", 5) == []
    assert index.nearest("eve", ["ix"], [1.0, 0.0], 5) == []


def test_nearest_orders_by_cosine_similarity_across_indexes(index: SearchIndex) -> None:
    index.upsert("a", [chunk(1, "east", vector=[1.0, 0.0, 0.0]), chunk(2, "north", vector=[0.0, 1.0, 0.0])])
    index.upsert("b", [chunk(3, "north-east", vector=[1.0, 1.0, 0.0]), chunk(4, "up", vector=[0.0, 0.0, 1.0])])
    hits = index.nearest("alice", ["a", "b"], [2.0, 0.2, 0.0], 3)
    assert ids(hits) == ["c1", "c3", "c2"]
    assert hits[0].score == pytest.approx(2.0 / (2.0**2 + 0.2**2) ** 0.5, abs=1e-4)
    assert hits[1].score == pytest.approx(2.2 / ((2.0**2 + 0.2**2) ** 0.5 * 2**0.5), abs=1e-4)


def test_nearest_in_an_index_without_vectors_is_empty(index: SearchIndex) -> None:
    index.upsert("ix", [chunk(1, "words only")])
    assert index.nearest("alice", ["ix"], [1.0, 0.0], 5) == []


def test_concurrent_writes_of_the_same_chunks_leave_one_copy_each(index: SearchIndex) -> None:
    chunks = [chunk(i, f"redelivered chunk {i}") for i in range(10)]
    barrier = threading.Barrier(8)
    errors: list[BaseException] = []

    def write() -> None:
        barrier.wait()
        try:
            index.upsert("ix", chunks)
        except BaseException as exc:
            errors.append(exc)

    workers = [threading.Thread(target=write) for _ in range(8)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=60)
    assert errors == []
    assert index.count("ix") == 10


@pytest.mark.emulator
def test_the_gcp_backend_searches_with_the_firestore_index(emulators: object) -> None:
    from common.adapters.gcp.firestore_index import FirestoreSearchIndex
    from common.bootstrap import _firestore_index
    from common.config import Settings

    index = _firestore_index(Settings(backend="gcp", project=emulators.project))  # type: ignore[attr-defined]
    assert isinstance(index, FirestoreSearchIndex)
    index.upsert(f"wired{os.getpid()}", [chunk(1, "wired through bootstrap")])
    assert ids(index.lexical("alice", [f"wired{os.getpid()}"], "bootstrap", 5)) == ["c1"]


def test_a_code_ranks_its_chunks_first_across_the_indexes_searched(index: SearchIndex) -> None:
    index.upsert("a", [chunk(1, "invoice number summary: the invoice number is on every invoice")])
    index.upsert("a", [chunk(2, "an unrelated page about shipping")])
    index.upsert("b", [chunk(3, "Beleg-Nr: R87654321012345")])
    hits = index.lexical("alice", ["a", "b"], "invoice number R87654321012345", 5)
    assert ids(hits) == ["c3", "c1"]
    assert hits[0].score > hits[1].score


def test_a_rare_word_is_found_past_more_common_matches_than_any_candidate_cap(index: SearchIndex) -> None:
    common = [chunk(i, f"maintenance log entry {i}") for i in range(700)]
    index.upsert("ix", [chunk(1000, "maintenance of the anemometer"), *common])
    hits = index.lexical("alice", ["ix"], "maintenance anemometer", 3)
    # Only the first is the contract: the embedded index leaves a word on most chunks out when rarer ones remain.
    assert ids(hits)[0] == "c1000"
