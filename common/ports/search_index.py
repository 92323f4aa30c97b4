"""The search index port: chunks with their text (and vectors), searched by words and by vectors.

An index is named (``index_id``: a collection's generation, so a re-index
builds a new one beside the old). Writes are idempotent by chunk id: writing
a chunk that is there replaces it, so a redelivered or repeated ingest creates
nothing new. Every read names the owner, and an adapter returns only that
owner's chunks, whatever index ids it is given.

A write that times out raises RetryableError (kind NETWORK, code
``index_timeout``); the caller retries it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class IndexedChunk:
    chunk_id: str
    owner: str
    collection_id: str
    document_id: str
    document: str  # the document's name
    position: int
    page: int
    page_end: int
    start: int
    end: int
    text: str
    heading: str | None = None
    vector: Sequence[float] | None = None


@dataclass(frozen=True, slots=True)
class Scored:
    chunk: IndexedChunk
    score: float  # BM25 (higher is better) or cosine similarity


class SearchIndex(Protocol):
    def upsert(self, index_id: str, chunks: Sequence[IndexedChunk]) -> None: ...

    def existing(self, index_id: str, chunk_ids: Sequence[str]) -> set[str]:
        """Which of these chunk ids the index holds."""
        ...

    def delete_document(self, index_id: str, document_id: str) -> int:
        """Remove a document's chunks; how many were removed."""
        ...

    def drop(self, index_id: str) -> None:
        """Remove a whole index (an old generation after a re-index, or a deleted collection)."""
        ...

    def count(self, index_id: str) -> int: ...

    def lexical(self, owner: str, index_ids: Sequence[str], query: str, k: int) -> list[Scored]:
        """Best ``k`` chunks by BM25 for the query's words (any of them)."""
        ...

    def nearest(self, owner: str, index_ids: Sequence[str], vector: Sequence[float], k: int) -> list[Scored]:
        """The ``k`` chunks whose vectors are nearest (cosine); [] for an index without vectors."""
        ...
