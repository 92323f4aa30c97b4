"""Search over collections, the pure parts: records, rank fusion, snippets, query terms."""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from common.core.chunking import ChunkSettings

__all__ = [
    "RRF_K",
    "Collection",
    "CollectionDocument",
    "Hit",
    "IngestCounts",
    "IngestSettings",
    "fuse",
    "query_terms",
    "snippet",
]

RRF_K = 60  # the constant of Cormack et al. (2009); ranks matter, raw scores of BM25 and cosine never mix
_TERM = re.compile(r"\w+", re.UNICODE)
NO_EMBEDDINGS = "none"


class IngestCounts(BaseModel):
    """A document's (or a collection's) progress through the stages."""

    pages: int = 0  # pages read
    chunks: int = 0  # chunks made
    embedded: int = 0  # chunks with their embedding (0 without an embedding model)
    indexed: int = 0  # chunks in the index

    def __add__(self, other: IngestCounts) -> IngestCounts:
        return IngestCounts(
            pages=self.pages + other.pages,
            chunks=self.chunks + other.chunks,
            embedded=self.embedded + other.embedded,
            indexed=self.indexed + other.indexed,
        )

    def figures(self) -> dict[str, int]:
        """The counts under the names a run's progress shows them."""
        return {
            "pages_read": self.pages,
            "chunks_made": self.chunks,
            "chunks_embedded": self.embedded,
            "chunks_indexed": self.indexed,
        }


class Collection(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: str
    owner: str
    name: str = Field(min_length=1, max_length=200)
    # The collection's job (kind ``ingest``, same owner): its runs are the collection's ingest and re-index runs.
    job_id: str
    chunking: ChunkSettings = Field(default_factory=ChunkSettings)
    embedding_model: str = NO_EMBEDDINGS
    # The index searches read. A re-index builds ``building_index`` with ``building_model`` beside it in run
    # ``building_run_id``; searches switch to it once that run is completed (see service.collections.current).
    active_index: str
    building_index: str | None = None
    building_model: str | None = None
    building_run_id: str | None = None
    generation: int = 1
    created_at: datetime
    updated_at: datetime


class CollectionDocument(BaseModel):
    """One document in a collection, identified by its content: the same bytes twice are one document."""

    model_config = ConfigDict(extra="ignore")

    id: str
    owner: str
    collection_id: str
    content_hash: str
    name: str
    uri: str
    mime: str | None = None
    status: str = "pending"  # pending, done, failed
    error: str | None = None
    # Which index generation holds its chunks, with the counts of that indexing.
    index_id: str | None = None
    counts: IngestCounts = Field(default_factory=IngestCounts)
    created_at: datetime
    updated_at: datetime


class DocumentRef(BaseModel):
    id: str
    name: str


class IngestSettings(BaseModel):
    """A search collection's ingest or re-index run: which documents go into which index, with which model.

    A collection's job holds only ``collection_id``; each run's settings name
    its documents and index (the collection service starts the runs).
    """

    model_config = ConfigDict(extra="forbid")

    collection_id: str = Field(min_length=1)
    purpose: Literal["ingest", "reindex"] = "ingest"
    index_id: str | None = None
    embedding_model: str = NO_EMBEDDINGS
    documents: list[DocumentRef] = Field(default_factory=list)


class Hit(BaseModel):
    model_config = ConfigDict(frozen=True)

    chunk_id: str
    collection_id: str
    document_id: str
    document: str  # the document's name
    page: int
    page_end: int
    start: int
    end: int
    score: float
    snippet: str
    text: str


def query_terms(query: str, *, limit: int = 32) -> list[str]:
    """Distinct lower-cased word terms of a query, in order."""
    seen: dict[str, None] = {}
    for t in _TERM.findall(query.lower()):
        seen.setdefault(t, None)
    return list(seen)[:limit]


def fuse(rankings: Sequence[Sequence[str]], *, k: int = RRF_K) -> list[tuple[str, float]]:
    """Reciprocal rank fusion: each id scores sum(1 / (k + rank)) over the rankings it is in."""
    scores: dict[str, float] = {}
    for ranking in rankings:
        for rank, item in enumerate(ranking, start=1):
            scores[item] = scores.get(item, 0.0) + 1.0 / (k + rank)
    return sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))


def snippet(text: str, query: str, *, width: int = 200) -> str:
    """About ``width`` characters of ``text`` around the first query term found, on word boundaries."""
    flat = " ".join(text.split())
    if len(flat) <= width:
        return flat
    lower = flat.lower()
    hits = [i for t in query_terms(query) if (i := lower.find(t)) >= 0]
    centre = min(hits) if hits else 0
    start = max(0, centre - width // 3)
    end = min(len(flat), start + width)
    start = max(0, end - width)
    if start > 0:
        start = flat.find(" ", start) + 1 or start
    if end < len(flat):
        end = flat.rfind(" ", start, end) if flat.rfind(" ", start, end) > start else end
    return ("…" if start > 0 else "") + flat[start:end] + ("…" if end < len(flat) else "")
