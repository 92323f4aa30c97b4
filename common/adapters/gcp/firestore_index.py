"""The search index on Firestore: chunks as documents, vectors by ``find_nearest``, words by term arrays.

One collection (``search_chunks``, behind the deployment's collection
prefix). A chunk's document id is a hash of (index id, chunk id), so writing
a chunk again replaces it. Each document holds the chunk's place and text,
its ``embedding`` (a Firestore ``Vector``, absent for a lexical-only
collection), its normalised ``terms`` (distinct words and search keys) and
``tf`` (each term's weighted count) and ``length``.

**Vectors.** ``find_nearest`` (COSINE) per index id, pre-filtered by owner
and index id (the composite vector index in terraform/firestore.tf); the
score is 1 - cosine distance, as the embedded adapter's cosine similarity.

**Words.** Firestore has no full-text search, so this is BM25 computed here:
the document frequency of each query term is an exact ``count()`` of the
owner's chunks in the index holding it, N is a count of those chunks, and the
candidates are fetched term by term, rarest first, with ``array_contains``,
until ``_CANDIDATE_CAP`` are in hand. What it approximates against SQLite's
FTS5 BM25: (1) when the query's terms match more than the cap, only the
chunks of the rarer terms plus an arbitrary (document-id order) share of the
commonest are ranked; (2) the average length is that of the candidates, not
of the whole index; (3) terms are whole words (no prefix or phrase queries).
Heading, document name and keys are weighted into ``tf`` as FTS5's column
weights are (2, 0.5, 2 against the text's 1).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from common.adapters.gcp import clients
from common.core.errors import ErrorKind, RetryableError
from common.core.search_keys import required_terms, search_keys, words
from common.ports.search_index import IndexedChunk, Scored

if TYPE_CHECKING:
    from google.cloud import firestore

CHUNKS = "search_chunks"
_CANDIDATE_CAP = 500
_BATCH = 400  # under Firestore's 500 writes per batch
_K1, _B = 1.2, 0.75  # FTS5's BM25 constants
_WEIGHTS = {"text": 1.0, "heading": 2.0, "document": 0.5, "keys": 2.0}
_MAX_TERMS = 32


def tokens(text: str, limit: int | None = None) -> list[str]:
    """Words as the embedded index's unicode61 tokeniser makes them (lower case, diacritics folded)."""
    return words(text, limit)


def term_counts(chunk: IndexedChunk) -> tuple[dict[str, float], int]:
    """Each term's weighted count in the chunk, and the chunk's length in tokens."""
    fields = {
        "text": tokens(chunk.text),
        "heading": tokens(chunk.heading or ""),
        "document": tokens(chunk.document),
        "keys": search_keys(f"{chunk.heading or ''}\n{chunk.text}"),
    }
    tf: dict[str, float] = {}
    for name, field_words in fields.items():
        for word in field_words:
            tf[word] = tf.get(word, 0.0) + _WEIGHTS[name]
    return dict(tf), sum(len(w) for w in fields.values())


class FirestoreSearchIndex:
    def __init__(self, project: str | None, *, database: str = "(default)", collection_prefix: str = "") -> None:
        self._project = project
        self._database = database
        self._collection = f"{collection_prefix}{CHUNKS}"

    def _chunks(self) -> firestore.CollectionReference:
        return clients.firestore_client(self._project, self._database).collection(self._collection)

    @staticmethod
    def _doc_id(index_id: str, chunk_id: str) -> str:
        return hashlib.sha256(f"{index_id}\x00{chunk_id}".encode()).hexdigest()

    # -- writes -------------------------------------------------------------------

    def upsert(self, index_id: str, chunks: Sequence[IndexedChunk]) -> None:
        from google.cloud.firestore_v1.vector import Vector

        client = clients.firestore_client(self._project, self._database)
        with _timeouts():
            for part in _parts(list(chunks), _BATCH):
                batch = client.batch()
                for c in part:
                    tf, length = term_counts(c)
                    data: dict[str, Any] = {
                        "index_id": index_id, "chunk_id": c.chunk_id, "owner": c.owner,
                        "collection_id": c.collection_id, "document_id": c.document_id, "document": c.document,
                        "position": c.position, "page": c.page, "page_end": c.page_end, "start": c.start,
                        "end": c.end, "heading": c.heading, "text": c.text,
                        "terms": sorted(tf), "tf": tf, "length": length,
                    }  # fmt: skip
                    if c.vector is not None:
                        data["embedding"] = Vector([float(x) for x in c.vector])
                    # set() replaces the whole document: a rewritten chunk keeps no stale terms.
                    batch.set(self._chunks().document(self._doc_id(index_id, c.chunk_id)), data)
                batch.commit()

    def delete_document(self, index_id: str, document_id: str) -> int:
        return self._delete_all(_where(self._chunks(), index_id=index_id, document_id=document_id))

    def drop(self, index_id: str) -> None:
        self._delete_all(_where(self._chunks(), index_id=index_id))

    def _delete_all(self, query: Any) -> int:
        client = clients.firestore_client(self._project, self._database)
        removed = 0
        with _timeouts():
            while True:
                refs = [s.reference for s in query.select([]).limit(_BATCH).stream()]
                if not refs:
                    return removed
                batch = client.batch()
                for ref in refs:
                    batch.delete(ref)
                batch.commit()
                removed += len(refs)

    # -- reads --------------------------------------------------------------------

    def existing(self, index_id: str, chunk_ids: Sequence[str]) -> set[str]:
        client = clients.firestore_client(self._project, self._database)
        by_doc = {self._doc_id(index_id, c): c for c in chunk_ids}
        found: set[str] = set()
        with _timeouts():
            for part in _parts(list(by_doc), _BATCH):
                refs = [self._chunks().document(d) for d in part]
                found.update(by_doc[s.id] for s in client.get_all(refs, field_paths=["chunk_id"]) if s.exists)
        return found

    def count(self, index_id: str) -> int:
        return _count(_where(self._chunks(), index_id=index_id))

    def lexical(self, owner: str, index_ids: Sequence[str], query: str, k: int) -> list[Scored]:
        words = tokens(query, _MAX_TERMS)
        keys = search_keys(query)
        terms = list(dict.fromkeys(words + keys))[:_MAX_TERMS]
        if not terms or not index_ids or k <= 0:
            return []
        ranked: list[tuple[bool, float, dict[str, Any]]] = []
        with _timeouts():
            for index_id in dict.fromkeys(index_ids):
                ranked += self._lexical_in(owner, index_id, words, keys, terms)
        # As in the embedded index: chunks with one of the query's specific terms come first, their
        # scores lifted above the rest's so that scores still fall down the list.
        ranked.sort(key=lambda r: (not r[0], -r[1]))
        ranked = ranked[:k]
        lift = max((r[1] for r in ranked if not r[0]), default=0.0) + 1e-6
        return [Scored(_chunk(d), s + (lift if first else 0.0)) for first, s, d in ranked]

    def _lexical_in(
        self, owner: str, index_id: str, words: list[str], keys: list[str], terms: list[str]
    ) -> list[tuple[bool, float, dict[str, Any]]]:
        """Each candidate of one index: (has a required term, BM25 score, its fields)."""
        base = _where(self._chunks(), owner=owner, index_id=index_id)
        total = _count(base)
        if total == 0:
            return []
        df = {t: _count(_contains(base, t)) for t in terms}
        present = sorted((t for t in terms if df[t]), key=lambda t: df[t])
        candidates: dict[str, dict[str, Any]] = {}
        for term in present:  # rarest first: their chunks are the ones BM25 ranks highest
            room = _CANDIDATE_CAP - len(candidates)
            if room <= 0:
                break
            for snap in _contains(base, term).limit(room + len(candidates)).stream():
                if len(candidates) < _CANDIDATE_CAP:
                    candidates.setdefault(snap.id, snap.to_dict() or {})
        if not candidates:
            return []
        avgdl = sum(int(d.get("length", 0)) for d in candidates.values()) / len(candidates) or 1.0
        idf = {t: math.log((total - df[t] + 0.5) / (df[t] + 0.5) + 1) for t in present}
        # A query's code or date is what it asks for, unless it is on most of the index.
        required = {t for t in required_terms(words, keys) if df.get(t, 0) <= max(50, total * 0.2)}
        ranked = []
        for data in candidates.values():
            tf: dict[str, float] = data.get("tf", {})
            norm = _K1 * (1 - _B + _B * int(data.get("length", 0)) / avgdl)
            score = sum(idf[t] * tf[t] * (_K1 + 1) / (tf[t] + norm) for t in present if tf.get(t))
            ranked.append((bool(required & tf.keys()), score, data))
        return ranked

    def nearest(self, owner: str, index_ids: Sequence[str], vector: Sequence[float], k: int) -> list[Scored]:
        from google.cloud.firestore_v1.base_vector_query import DistanceMeasure
        from google.cloud.firestore_v1.vector import Vector

        if not index_ids or k <= 0 or not any(vector):
            return []
        best: list[Scored] = []
        with _timeouts():
            for index_id in dict.fromkeys(index_ids):
                query = _where(self._chunks(), owner=owner, index_id=index_id)
                found = query.find_nearest(
                    vector_field="embedding",
                    query_vector=Vector([float(x) for x in vector]),
                    distance_measure=DistanceMeasure.COSINE,
                    limit=k,
                    distance_result_field="_distance",
                )
                for snap in found.stream():
                    data = snap.to_dict() or {}
                    best.append(Scored(_chunk(data), 1.0 - float(data.get("_distance", 1.0))))
        best.sort(key=lambda s: -s.score)
        return best[:k]


def _where(query: Any, **equal: str) -> Any:
    from google.cloud.firestore_v1.base_query import FieldFilter

    for field, value in equal.items():
        query = query.where(filter=FieldFilter(field, "==", value))
    return query


def _contains(query: Any, term: str) -> Any:
    from google.cloud.firestore_v1.base_query import FieldFilter

    return query.where(filter=FieldFilter("terms", "array_contains", term))


def _count(query: Any) -> int:
    result = query.count(alias="n").get()
    return int(result[0][0].value)


def _parts(items: list[Any], size: int) -> Iterator[list[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


class _timeouts:
    """Firestore's deadline and unavailability errors as the port's retryable ``index_timeout``."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        from google.api_core import exceptions

        if isinstance(exc, exceptions.DeadlineExceeded | exceptions.ServiceUnavailable):
            raise RetryableError(
                f"the search index call timed out: {exc}", kind=ErrorKind.NETWORK, code="index_timeout"
            ) from exc


def _chunk(d: dict[str, Any]) -> IndexedChunk:
    return IndexedChunk(
        chunk_id=d["chunk_id"], owner=d["owner"], collection_id=d["collection_id"], document_id=d["document_id"],
        document=d["document"], position=int(d["position"]), page=int(d["page"]), page_end=int(d["page_end"]),
        start=int(d["start"]), end=int(d["end"]), heading=d.get("heading"), text=d["text"],
    )  # fmt: skip
