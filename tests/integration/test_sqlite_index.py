"""The embedded search index: specific terms first, dates and codes matched however written,
the owner filter beyond the candidate cap, and a file of the first layout migrated."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from common.adapters.local.sqlite_index import SqliteSearchIndex
from common.ports.search_index import IndexedChunk


def _chunk(i: int, text: str, *, owner: str = "alice", doc: str | None = None) -> IndexedChunk:
    return IndexedChunk(
        chunk_id=f"c{i}", owner=owner, collection_id="col", document_id=doc or f"d{i}", document=doc or f"d{i}.pdf",
        position=0, page=1, page_end=1, start=0, end=len(text), text=text,
    )  # fmt: skip


def test_a_chunk_with_the_querys_number_ranks_above_chunks_full_of_its_common_words(tmp_path: Path) -> None:
    # As in a German corpus: the code is on many pages, the question's English words on few.
    index = SqliteSearchIndex(tmp_path / "s.db")
    filler = [_chunk(i, f"Lieferschein Position {i} Menge Preis") for i in range(100)]
    coded = [_chunk(100 + i, f"Seite {i} Beleg-Nr: R87654321012345 Warenrechnung") for i in range(20)]
    wordy = [
        _chunk(200 + i, "Invoice number summary: the invoice number is printed on every invoice") for i in range(2)
    ]
    index.upsert("ix", [*filler, *coded, *wordy])
    hits = index.lexical("alice", ["ix"], "invoice number R87654321012345", 5)
    assert all("R87654321012345" in h.chunk.text for h in hits)
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    fewer = index.lexical("alice", ["ix"], "invoice number R87654321012345", 22)
    assert {h.chunk.chunk_id for h in fewer[20:]} == {"c200", "c201"}  # the rest fill the list after them


def test_a_date_and_a_code_match_however_they_are_written(tmp_path: Path) -> None:
    index = SqliteSearchIndex(tmp_path / "s.db")
    index.upsert(
        "ix",
        [_chunk(1, "Rechnungsdatum 05.03.2013, Lieferant GmbH"), _chunk(2, "Datum 06.03.2013, Lieferant GmbH"),
         _chunk(3, "Invoice INV/2023/03/0008")],
    )  # fmt: skip
    assert index.lexical("alice", ["ix"], "invoice from Lieferant GmbH dated 2013-03-05", 1)[0].chunk.chunk_id == "c1"
    assert index.lexical("alice", ["ix"], "INV-2023-03-0008", 1)[0].chunk.chunk_id == "c3"


def test_an_owners_few_chunks_are_found_past_another_owners_many_better_ones(tmp_path: Path) -> None:
    index = SqliteSearchIndex(tmp_path / "s.db")
    others = [_chunk(i, "widget widget widget report", owner="bob") for i in range(700)]  # more than the cap
    index.upsert("bob-ix", others)
    index.upsert("alice-ix", [_chunk(1000, "a long report that mentions a widget once among many other words")])
    hits = index.lexical("alice", ["alice-ix", "bob-ix"], "widget", 5)
    assert [h.chunk.chunk_id for h in hits] == ["c1000"]


_LAYOUT_1 = """
CREATE TABLE chunks (rowid INTEGER PRIMARY KEY, index_id TEXT NOT NULL, chunk_id TEXT NOT NULL, owner TEXT NOT NULL,
    collection_id TEXT NOT NULL, document_id TEXT NOT NULL, document TEXT NOT NULL, position INTEGER NOT NULL,
    page INTEGER NOT NULL, page_end INTEGER NOT NULL, start INTEGER NOT NULL, "end" INTEGER NOT NULL, heading TEXT,
    text TEXT NOT NULL, vector BLOB, UNIQUE (index_id, chunk_id));
CREATE VIRTUAL TABLE chunks_fts USING fts5(text, heading, document, content='chunks', content_rowid='rowid',
    tokenize='unicode61 remove_diacritics 2');
CREATE TRIGGER chunks_ai AFTER INSERT ON chunks BEGIN
    INSERT INTO chunks_fts(rowid, text, heading, document) VALUES (new.rowid, new.text, new.heading, new.document);
END;
CREATE TABLE generations (index_id TEXT PRIMARY KEY, changes INTEGER NOT NULL);
INSERT INTO chunks (index_id, chunk_id, owner, collection_id, document_id, document, position, page, page_end,
    start, "end", heading, text) VALUES ('ix', 'old', 'alice', 'col', 'd', 'd.pdf', 0, 1, 1, 0, 10, NULL,
    'Rechnung vom 05.03.2013');
"""


def test_a_file_of_the_first_layout_is_migrated_and_its_chunks_get_keys(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "s.db")
    conn.executescript(_LAYOUT_1)
    conn.close()
    index = SqliteSearchIndex(tmp_path / "s.db")
    with sqlite3.connect(tmp_path / "s.db") as check:
        assert check.execute("SELECT keys FROM chunks WHERE chunk_id = 'old'").fetchone() == ("d20130305",)
    assert [h.chunk.chunk_id for h in index.lexical("alice", ["ix"], "March 5, 2013", 5)] == ["old"]
    index.upsert("ix", [_chunk(1, "Rechnung")])
    assert {h.chunk.chunk_id for h in index.lexical("alice", ["ix"], "rechnung", 5)} == {"old", "c1"}
    assert index.delete_document("ix", "d") == 1  # the delete trigger of the new layout keeps FTS in step
    assert [h.chunk.chunk_id for h in index.lexical("alice", ["ix"], "rechnung", 5)] == ["c1"]


def test_a_code_printed_on_many_pages_is_still_what_the_query_asks_for(tmp_path: Path) -> None:
    index = SqliteSearchIndex(tmp_path / "s.db")
    filler = [_chunk(i, f"Lieferschein Position {i} Menge Preis") for i in range(300)]
    coded = [_chunk(300 + i, f"Seite {i} Referenz 2013-471102 Rechnung") for i in range(60)]  # 15 % of the chunks
    wordy = [_chunk(400 + i, "Invoice number summary: the invoice number is on every invoice") for i in range(2)]
    index.upsert("ix", [*filler, *coded, *wordy])
    hits = index.lexical("alice", ["ix"], "invoice number 471102", 5)
    assert all("471102" in h.chunk.text for h in hits)


def test_a_code_on_more_chunks_than_the_candidate_cap_still_ranks_its_chunks_first(tmp_path: Path) -> None:
    index = SqliteSearchIndex(tmp_path / "s.db")
    filler = [_chunk(i, f"Lieferschein Position {i} Menge Preis") for i in range(5000)]
    coded = [_chunk(10_000 + i, f"Seite {i} Referenz 2013-471102 Rechnung") for i in range(1100)]
    wordy = [_chunk(20_000 + i, "Invoice number summary: the invoice number is on every invoice") for i in range(2)]
    index.upsert("ix", [*filler, *coded, *wordy])
    hits = index.lexical("alice", ["ix"], "invoice number 471102", 10)
    assert len(hits) == 10 and all("471102" in h.chunk.text for h in hits)
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
