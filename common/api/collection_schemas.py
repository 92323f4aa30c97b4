"""Request and response bodies of the search collections' routes.

Kept beside :mod:`common.api.schemas` rather than in it: the collections are
their own resource with their own records (:mod:`common.core.retrieval`).
"""

from __future__ import annotations

from datetime import datetime

from pydantic import Field, model_validator

from common.api.schemas import Out, Request, RunOut
from common.core.chunking import ChunkSettings
from common.core.retrieval import NO_EMBEDDINGS, Collection, CollectionDocument, Hit, IngestCounts

# The model names bootstrap.embedder_for knows; whether vertex/openai are configured is checked on use.
_MODEL = r"^(none|hashing-[1-9][0-9]{0,3}|(vertex|openai):[A-Za-z0-9][A-Za-z0-9._/@-]*)$"


class ChunkingIO(Request):
    """Chunks of at most ``max_tokens`` (estimated), the last ``overlap_tokens`` repeated in the next."""

    max_tokens: int = Field(default=256, ge=16, le=8192)
    overlap_tokens: int = Field(default=32, ge=0, le=4096)

    @model_validator(mode="after")
    def _overlap_below_budget(self) -> ChunkingIO:
        if self.overlap_tokens * 2 > self.max_tokens:
            raise ValueError("overlap_tokens must be at most half of max_tokens")
        return self

    def settings(self) -> ChunkSettings:
        return ChunkSettings(max_tokens=self.max_tokens, overlap_tokens=self.overlap_tokens)


class CollectionCreate(Request):
    name: str = Field(min_length=1, max_length=200)
    chunking: ChunkingIO = Field(default_factory=ChunkingIO)
    embedding_model: str = Field(
        default=NO_EMBEDDINGS,
        max_length=200,
        pattern=_MODEL,
        description="none (lexical search only), hashing-N, vertex:MODEL or openai:MODEL",
    )


class CollectionUpdate(Request):
    embedding_model: str = Field(max_length=200, pattern=_MODEL)


class CollectionOut(Out):
    id: str
    name: str
    max_tokens: int
    overlap_tokens: int
    embedding_model: str
    # A re-index in progress: searches use the active model until its run completes.
    building_model: str | None
    building_run_id: str | None = Field(default=None, description="the re-index run building_model is built by")
    job_id: str = Field(description="the collection's job (kind ingest): its runs are the collection's runs")
    documents: int
    chunks: int
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, c: Collection, documents: int, chunks: int) -> CollectionOut:
        return cls(
            id=c.id,
            name=c.name,
            max_tokens=c.chunking.max_tokens,
            overlap_tokens=c.chunking.overlap_tokens,
            embedding_model=c.embedding_model,
            building_model=c.building_model,
            building_run_id=c.building_run_id,
            job_id=c.job_id,
            documents=documents,
            chunks=chunks,
            created_at=c.created_at,
            updated_at=c.updated_at,
        )


class CollectionList(Out):
    items: list[CollectionOut]
    next_cursor: str | None = None


class CountsOut(Out):
    pages: int = Field(description="pages read")
    chunks: int = Field(description="chunks made")
    embedded: int = Field(description="chunks embedded")
    indexed: int = Field(description="chunks written to the index")

    @classmethod
    def of(cls, c: IngestCounts) -> CountsOut:
        return cls(pages=c.pages, chunks=c.chunks, embedded=c.embedded, indexed=c.indexed)


class DocumentOut(Out):
    id: str
    collection_id: str
    name: str
    content_hash: str
    mime: str | None
    status: str
    error: str | None
    counts: CountsOut
    created_at: datetime

    @classmethod
    def of(cls, d: CollectionDocument) -> DocumentOut:
        return cls(
            id=d.id,
            collection_id=d.collection_id,
            name=d.name,
            content_hash=d.content_hash,
            mime=d.mime,
            status=d.status,
            error=d.error,
            counts=CountsOut.of(d.counts),
            created_at=d.created_at,
        )


class DocumentList(Out):
    items: list[DocumentOut]
    next_cursor: str | None = None


class DocumentsAdded(Out):
    """The documents as the collection records them, and the run ingesting the new ones (null: none was new).

    The run is a run of the collection's ``ingest`` job: follow it at ``/v1/runs/{id}``, its items at
    ``/v1/runs/{id}/items`` and its progress (with the stage counts) at ``/v1/operations/{operation_id}``."""

    run: RunOut | None
    documents: list[DocumentOut]


class SearchQuery(Request):
    q: str = Field(min_length=1, max_length=1000)
    k: int = Field(default=10, ge=1, le=100)


class HitOut(Out):
    chunk_id: str
    document_id: str
    document: str = Field(description="the document's name")
    page: int
    page_end: int
    score: float
    snippet: str

    @classmethod
    def of(cls, h: Hit) -> HitOut:
        return cls(
            chunk_id=h.chunk_id,
            document_id=h.document_id,
            document=h.document,
            page=h.page,
            page_end=h.page_end,
            score=h.score,
            snippet=h.snippet,
        )


class SearchOut(Out):
    items: list[HitOut]
