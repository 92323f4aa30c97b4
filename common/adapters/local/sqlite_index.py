"""The search index on the embedded backend: SQLite FTS5 (BM25) and vectors.

One file (``search.db`` in the data directory). ``chunks`` holds each chunk's
text, place and vector (float32 little-endian BLOB); an external-content FTS5
table over it (``unicode61``, diacritics folded) answers BM25 queries, kept in
step by triggers.

**Vectors.** The plan was sqlite-vec, but Python 3.11's ``sqlite3`` module as
built here has no ``enable_load_extension`` (CPython built without
``--enable-loadable-sqlite-extensions``), so no extension can be loaded. The
vector search is therefore chosen by configuration
(``SLUICE_VECTOR_SEARCH``): ``brute-force`` computes cosine similarity against
all of an index's vectors with numpy (a matrix cached per index and rebuilt
when the index changes); ``sqlite-vec`` is refused with that explanation
rather than falling back silently.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from common.adapters.local.sqlite_wal import use_wal
from common.core.errors import ConfigError, ErrorKind, RetryableError
from common.core.search_keys import required_terms, search_keys, words
from common.ports.search_index import IndexedChunk, Scored

_TABLES = """
CREATE TABLE IF NOT EXISTS chunks (
    rowid INTEGER PRIMARY KEY,
    index_id TEXT NOT NULL,
    chunk_id TEXT NOT NULL,
    owner TEXT NOT NULL,
    collection_id TEXT NOT NULL,
    document_id TEXT NOT NULL,
    document TEXT NOT NULL,
    position INTEGER NOT NULL,
    page INTEGER NOT NULL,
    page_end INTEGER NOT NULL,
    start INTEGER NOT NULL,
    "end" INTEGER NOT NULL,
    heading TEXT,
    text TEXT NOT NULL,
    vector BLOB,
    keys TEXT NOT NULL DEFAULT '',
    UNIQUE (index_id, chunk_id)
);
CREATE INDEX IF NOT EXISTS chunks_by_document ON chunks (index_id, document_id);
CREATE TABLE IF NOT EXISTS generations (index_id TEXT PRIMARY KEY, changes INTEGER NOT NULL);
"""
# ``keys``: the chunk's date and identifier keys (common.core.search_keys), matched like words.
_FTS = """
CREATE VIRTUAL TABLE IF NOT EXISTS chunks_fts USING fts5(
    text, heading, document, keys, content='chunks', content_rowid='rowid',
    tokenize='unicode61 remove_diacritics 2'
);
CREATE TRIGGER IF NOT EXISTS chunks_ai AFTER INSERT ON chunks BEGIN
    INSERT INTO chunks_fts(rowid, text, heading, document, keys)
        VALUES (new.rowid, new.text, new.heading, new.document, new.keys);
END;
CREATE TRIGGER IF NOT EXISTS chunks_ad AFTER DELETE ON chunks BEGIN
    INSERT INTO chunks_fts(chunks_fts, rowid, text, heading, document, keys)
        VALUES ('delete', old.rowid, old.text, old.heading, old.document, old.keys);
END;
CREATE VIRTUAL TABLE IF NOT EXISTS chunks_vocab USING fts5vocab(chunks_fts, 'row');
"""
# PRAGMA user_version of the layout above; an older file is migrated when opened.
_LAYOUT = 2
# bm25 weights of text, heading, document name, keys: a heading's or a key's match says more than the body's.
_WEIGHTS = "1.0, 2.0, 0.5, 2.0"
# A query of common terms only ranks this many of its matching chunks (the newest), not all of them.
_CANDIDATE_CAP = 500
_COLUMNS = (
    'chunk_id, owner, collection_id, document_id, document, position, page, page_end, start, "end", heading, text'
)
VECTOR_SEARCHES = ("brute-force", "sqlite-vec")


def sqlite_can_load_extensions() -> bool:
    return hasattr(sqlite3.connect(":memory:"), "enable_load_extension")


class SqliteSearchIndex:
    def __init__(self, path: Path | str, *, vector_search: str = "brute-force", timeout_s: float = 30.0) -> None:
        if vector_search not in VECTOR_SEARCHES:
            raise ConfigError(f"unknown vector search {vector_search!r}", hint="Use brute-force or sqlite-vec.")
        if vector_search == "sqlite-vec":
            raise ConfigError(
                "SLUICE_VECTOR_SEARCH=sqlite-vec needs a sqlite3 module that can load extensions; "
                + ("this one can, but the sqlite-vec adapter is not built yet" if sqlite_can_load_extensions() else
                   "this Python's sqlite3 has no enable_load_extension"),
                hint="Set SLUICE_VECTOR_SEARCH=brute-force (numpy cosine over each index's vectors).",
            )  # fmt: skip
        self._path = str(path)
        self._timeout_s = timeout_s
        self._local = threading.local()
        self._matrices: dict[str, tuple[int, Any, list[int]]] = {}
        self._lock = threading.Lock()
        _migrate(self._conn())

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self._path, timeout=self._timeout_s, isolation_level=None, check_same_thread=False)
            use_wal(conn, self._timeout_s)
            conn.execute("PRAGMA synchronous=NORMAL")
            self._local.conn = conn
        return conn

    # -- writes -------------------------------------------------------------------

    def upsert(self, index_id: str, chunks: Sequence[IndexedChunk]) -> None:
        rows = [
            (index_id, c.chunk_id, c.owner, c.collection_id, c.document_id, c.document, c.position, c.page,
             c.page_end, c.start, c.end, c.heading, c.text, _pack(c.vector), _keys(c.heading, c.text))
            for c in chunks
        ]  # fmt: skip
        self._write(
            lambda conn: (
                # Delete-then-insert keeps the FTS table in step (an UPSERT would not fire the delete trigger).
                conn.executemany(
                    "DELETE FROM chunks WHERE index_id = ? AND chunk_id = ?", [(r[0], r[1]) for r in rows]
                ),
                conn.executemany(
                    f"INSERT INTO chunks (index_id, {_COLUMNS}, vector, keys) VALUES ({','.join('?' * 15)})", rows
                ),
            ),
            index_id,
        )

    def delete_document(self, index_id: str, document_id: str) -> int:
        out: list[int] = []
        self._write(
            lambda conn: out.append(
                conn.execute(
                    "DELETE FROM chunks WHERE index_id = ? AND document_id = ?", (index_id, document_id)
                ).rowcount
            ),
            index_id,
        )
        return out[0]

    def drop(self, index_id: str) -> None:
        self._write(lambda conn: conn.execute("DELETE FROM chunks WHERE index_id = ?", (index_id,)), index_id)

    def _write(self, fn: Any, index_id: str) -> None:
        conn = self._conn()
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                fn(conn)
                conn.execute(
                    "INSERT INTO generations (index_id, changes) VALUES (?, 1) "
                    "ON CONFLICT(index_id) DO UPDATE SET changes = changes + 1",
                    (index_id,),
                )
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        except sqlite3.OperationalError as exc:
            if "locked" in str(exc) or "busy" in str(exc):
                raise RetryableError(
                    f"the search index write timed out: {exc}", kind=ErrorKind.NETWORK, code="index_timeout"
                ) from exc
            raise

    # -- reads --------------------------------------------------------------------

    def existing(self, index_id: str, chunk_ids: Sequence[str]) -> set[str]:
        found: set[str] = set()
        for i in range(0, len(chunk_ids), 500):
            part = chunk_ids[i : i + 500]
            rows = self._conn().execute(
                f"SELECT chunk_id FROM chunks WHERE index_id = ? AND chunk_id IN ({','.join('?' * len(part))})",
                (index_id, *part),
            )
            found.update(r[0] for r in rows)
        return found

    def count(self, index_id: str) -> int:
        return int(self._conn().execute("SELECT count(*) FROM chunks WHERE index_id = ?", (index_id,)).fetchone()[0])

    def lexical(self, owner: str, index_ids: Sequence[str], query: str, k: int) -> list[Scored]:
        """BM25 over words and keys; chunks with one of the query's specific terms (a date, a code,
        a long number) rank above those sharing only its common words.

        Speed at 100,000s of chunks: FTS5 computes BM25 for every row a query
        matches, and a common word matches most rows. So terms in more than
        5 % of the chunks are left out when rarer ones remain (their IDF is
        near zero: they barely move BM25), and a query made only of common
        terms ranks a bounded set of matching rows (the newest) instead of all."""
        words = _tokens(query)
        keys = search_keys(query)
        terms = list(dict.fromkeys(words + keys))
        if not terms or not index_ids:
            return []
        df, total = self._frequencies(terms)
        rare = [t for t in terms if df.get(t, 0) <= max(50, total * 0.05)]
        # A query's code or date is what it asks for even when many chunks carry it (a number
        # printed on every page); only one on most of the index is too vague to require.
        required = [t for t in required_terms(words, keys) if df.get(t, 0) <= max(50, total * 0.2)]
        first: list[Scored] = []
        if required:
            scoring = list(dict.fromkeys(required + rare))
            # A required term on thousands of chunks: which of them come first is a matter of the
            # other words only, so a bounded set of them is ranked (as for common words).
            crowded = any(df.get(t, 0) > _CANDIDATE_CAP for t in required)
            match = f"({_any(required)}) AND ({_any(scoring)})"
            first = self._ranked(match, owner, index_ids, k, bounded=crowded)
            if len(first) >= k:
                return first
        seen = {s.chunk.chunk_id + s.chunk.collection_id for s in first}
        rest = [
            s
            for s in self._ranked(_any(rare or terms), owner, index_ids, k + len(first), bounded=not rare)
            if s.chunk.chunk_id + s.chunk.collection_id not in seen
        ][: k - len(first)]
        if first and rest:
            # Scores stay decreasing down the list: the specific matches sit above the rest.
            lift = max(s.score for s in rest) - min(s.score for s in first) + 1e-6
            first = [Scored(s.chunk, s.score + max(0.0, lift)) for s in first]
        return first + rest

    def _frequencies(self, terms: list[str]) -> tuple[dict[str, int], int]:
        """How many chunks hold each term, and about how many chunks there are."""
        conn = self._conn()
        total = int(conn.execute("SELECT max(rowid) FROM chunks").fetchone()[0] or 0)
        marks = ",".join("?" * len(terms))
        rows = conn.execute(f"SELECT term, doc FROM chunks_vocab WHERE term IN ({marks})", terms).fetchall()
        return {str(t): int(n) for t, n in rows}, total

    def _ranked(
        self, match: str, owner: str, index_ids: Sequence[str], k: int, *, bounded: bool = False
    ) -> list[Scored]:
        """The best ``k`` of the owner's chunks in ``index_ids`` for an FTS5 ``match``; ``bounded``:
        among the newest _CANDIDATE_CAP matching chunks only (SQLite stops reading there)."""
        marks = ",".join("?" * len(index_ids))
        cols = ", ".join("c." + c for c in _COLUMNS.split(", "))
        # bm25() is lower-is-better in FTS5; negate it so every adapter's scores rise with relevance.
        matching = (
            f"SELECT {cols}, -bm25(chunks_fts, {_WEIGHTS}) AS s "
            f"FROM chunks_fts JOIN chunks c ON c.rowid = chunks_fts.rowid "
            f"WHERE chunks_fts MATCH ? AND c.owner = ? AND c.index_id IN ({marks})"
        )
        sql = (
            f"SELECT * FROM ({matching} ORDER BY chunks_fts.rowid DESC LIMIT {_CANDIDATE_CAP}) ORDER BY s DESC LIMIT ?"
            if bounded
            else f"{matching} ORDER BY s DESC LIMIT ?"
        )
        rows = self._conn().execute(sql, (match, owner, *index_ids, k)).fetchall()
        return [Scored(_chunk(r), float(r[-1])) for r in rows]

    def nearest(self, owner: str, index_ids: Sequence[str], vector: Sequence[float], k: int) -> list[Scored]:
        import numpy as np

        q = np.asarray(vector, dtype=np.float32)
        norm = float(np.linalg.norm(q))
        if norm == 0 or not index_ids:
            return []
        q /= norm
        best: list[tuple[float, int]] = []
        for index_id in index_ids:
            matrix, rowids = self._matrix(owner, index_id)
            if not rowids or matrix.shape[1] != q.shape[0]:
                continue
            sims = matrix @ q
            top = np.argpartition(-sims, min(k, len(rowids) - 1))[:k] if len(rowids) > k else np.arange(len(rowids))
            best += [(float(sims[i]), rowids[i]) for i in top]
        best.sort(key=lambda t: -t[0])
        best = best[:k]
        if not best:
            return []
        marks = ",".join("?" * len(best))
        rows = {
            r[0]: r[1:]
            for r in self._conn().execute(
                f"SELECT rowid, {_COLUMNS} FROM chunks WHERE rowid IN ({marks})", [b[1] for b in best]
            )
        }
        return [Scored(_chunk(rows[rid]), score) for score, rid in best if rid in rows]

    def _matrix(self, owner: str, index_id: str) -> tuple[Any, list[int]]:
        """The index's normalised vectors (one row per chunk of ``owner``), cached until the index changes."""
        import numpy as np

        conn = self._conn()
        row = conn.execute("SELECT changes FROM generations WHERE index_id = ?", (index_id,)).fetchone()
        changes = int(row[0]) if row else 0
        key = f"{owner}\x00{index_id}"
        with self._lock:
            cached = self._matrices.get(key)
            if cached is not None and cached[0] == changes:
                return cached[1], cached[2]
        rows = conn.execute(
            "SELECT rowid, vector FROM chunks WHERE index_id = ? AND owner = ? AND vector IS NOT NULL",
            (index_id, owner),
        ).fetchall()
        rowids = [int(r[0]) for r in rows]
        if rows:
            matrix = np.vstack([np.frombuffer(r[1], dtype="<f4") for r in rows])
            norms = np.linalg.norm(matrix, axis=1, keepdims=True)
            matrix = matrix / np.where(norms == 0, 1, norms)
        else:
            matrix = np.zeros((0, 0), dtype=np.float32)
        with self._lock:
            self._matrices[key] = (changes, matrix, rowids)
        return matrix, rowids

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None


def _tokens(query: str, limit: int = 32) -> list[str]:
    """The query's distinct words as the index's tokeniser makes them, so that
    each is one vocabulary entry whose document frequency can be looked up."""
    return words(query, limit)


def _any(terms: Sequence[str]) -> str:
    return " OR ".join('"' + t.replace('"', '""') + '"' for t in terms)


def _keys(heading: str | None, text: str) -> str:
    return " ".join(search_keys(f"{heading or ''}\n{text}"))


def _migrate(conn: sqlite3.Connection) -> None:
    """Create the layout, or bring a file of an older layout to it: keys computed, the FTS table rebuilt.

    Each step is idempotent or one transaction, and the version is written
    last, so a migration interrupted anywhere is done again from where it was."""
    if int(conn.execute("PRAGMA user_version").fetchone()[0]) >= _LAYOUT:
        return
    conn.executescript(_TABLES)
    if "keys" not in {r[1] for r in conn.execute("PRAGMA table_info(chunks)")}:
        conn.execute("ALTER TABLE chunks ADD COLUMN keys TEXT NOT NULL DEFAULT ''")
    rows = conn.execute("SELECT rowid, heading, text FROM chunks WHERE keys = ''").fetchall()
    if rows:
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany("UPDATE chunks SET keys = ? WHERE rowid = ?", [(_keys(h, t), r) for r, h, t in rows])
        conn.execute("COMMIT")
    conn.executescript(
        "BEGIN IMMEDIATE; DROP TRIGGER IF EXISTS chunks_ai; DROP TRIGGER IF EXISTS chunks_ad; "
        "DROP TABLE IF EXISTS chunks_vocab; DROP TABLE IF EXISTS chunks_fts;"
        + _FTS
        + f"INSERT INTO chunks_fts(chunks_fts) VALUES ('rebuild'); PRAGMA user_version = {_LAYOUT}; COMMIT;"
    )


def _pack(vector: Sequence[float] | None) -> bytes | None:
    if vector is None:
        return None
    import numpy as np

    return np.asarray(vector, dtype="<f4").tobytes()


def _chunk(r: Sequence[Any]) -> IndexedChunk:
    return IndexedChunk(
        chunk_id=r[0], owner=r[1], collection_id=r[2], document_id=r[3], document=r[4], position=r[5],
        page=r[6], page_end=r[7], start=r[8], end=r[9], heading=r[10], text=r[11],
    )  # fmt: skip
