"""The embedders against local fakes at the HTTP boundary.

Vertex AI: the real google-genai client (``embed_content``, which sends
text-embedding models to ``:predict``) against tests/fakes/vertex.py: batches,
task types, a 429 with the server's delay, and the ingest stage retrying it.
OpenAI-compatible: the adapter's own HTTP against tests/fakes/openai_chat.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from google.oauth2.credentials import Credentials

from common.adapters.embedders.openai_compat import OpenAICompatibleEmbedder
from common.adapters.embedders.vertex import VertexEmbedder
from common.adapters.local.clock import ManualClock
from common.core.chunking import ChunkSettings
from common.core.errors import ErrorKind, PermanentError, RetryableError
from common.core.models import Run, WorkItem
from common.core.states import RunStatus
from common.ports.store import Filter
from common.service import collections as cols
from common.service import repo
from tests.fakes import openai_chat, vertex
from tests.fakes.openai_chat import FakeOpenAI
from tests.support import Pipeline, make_pipeline

MODEL = "vertex:text-embedding-005"


class Limiter:
    def __init__(self) -> None:
        self.acquired = 0
        self.penalties: list[float | None] = []

    def acquire(self, cost: float = 1.0) -> object:
        self.acquired += 1
        return None

    def penalise(self, *, duration_s: float | None = None) -> None:
        self.penalties.append(duration_s)


@pytest.fixture
def fake_vertex() -> Iterator[vertex.FakeVertex]:
    with vertex.FakeVertex() as fake:
        yield fake


def _vertex(fake: vertex.FakeVertex, *, batch_size: int = 3, limiter: Limiter | None = None) -> VertexEmbedder:
    return VertexEmbedder(
        project="p",
        location="europe-west1",
        model="text-embedding-005",
        clock=ManualClock(),
        batch_size=batch_size,
        limiter=limiter,
        credentials=Credentials(token="test"),  # type: ignore[no-untyped-call]
        http_base_url=fake.base_url,
    )


def _doc(n: int) -> cols.NewDocument:
    text = f"# Report {n}\n\n" + "\n\n".join(
        f"Paragraph {p} of report {n}: " + " ".join(f"fact-{n}-{p}-{i}" for i in range(30)) for p in range(6)
    )
    return cols.NewDocument(name=f"r{n}.md", data=text.encode())


def _pipeline_with(tmp: Path, embedder: VertexEmbedder) -> Pipeline:
    p = make_pipeline(tmp)
    p.deps._embedders[MODEL] = embedder  # the model name resolves to the embedder aimed at the fake
    return p


def test_vertex_embeds_in_batches_through_predict_with_the_document_task_type(
    fake_vertex: vertex.FakeVertex,
) -> None:
    fake_vertex.default = vertex.embeddings
    texts = [f"chunk {i}" for i in range(3)]
    limiter = Limiter()
    vectors = _vertex(fake_vertex, limiter=limiter).embed(texts, task="document")
    assert vectors == [vertex.fake_vector(t) for t in texts]
    (sent,) = fake_vertex.requests
    assert (sent.rpc, sent.model) == ("predict", "text-embedding-005")
    assert sent.embed_texts == texts
    assert sent.embed_task_types == ["RETRIEVAL_DOCUMENT"] * 3
    assert limiter.acquired == 1  # one request, one unit of quota


def test_vertex_refuses_a_batch_larger_than_its_size(fake_vertex: vertex.FakeVertex) -> None:
    with pytest.raises(ValueError, match="at most 3"):
        _vertex(fake_vertex).embed(["a", "b", "c", "d"], task="query")
    assert fake_vertex.requests == []


def test_vertex_429_is_rate_limited_with_the_servers_delay_and_penalises_the_limiter(
    fake_vertex: vertex.FakeVertex,
) -> None:
    fake_vertex.push(vertex.rate_limited(retry_delay="7s"))
    limiter = Limiter()
    with pytest.raises(RetryableError) as err:
        _vertex(fake_vertex, limiter=limiter).embed(["x"], task="query")
    assert err.value.kind is ErrorKind.RATE_LIMITED
    assert err.value.retry_after == 7.0
    assert limiter.penalties == [7.0]


def test_ingest_embeds_every_chunk_in_batches_of_the_embedders_size(
    tmp_path: Path, fake_vertex: vertex.FakeVertex
) -> None:
    fake_vertex.default = vertex.embeddings
    p = _pipeline_with(tmp_path, _vertex(fake_vertex, batch_size=3))
    coll = cols.create_collection(
        p.deps, "alice", "c", chunking=ChunkSettings(max_tokens=64, overlap_tokens=0), embedding_model=MODEL
    )
    run, _ = cols.add_documents(p.deps, p.sender, "alice", coll.id, [_doc(1)])
    p.drain()
    assert run is not None
    counts = _outputs(p, run.id)
    assert counts["chunks_embedded"] == counts["chunks_made"] > 3
    sizes = [len(r.embed_texts) for r in fake_vertex.requests]
    assert all(1 <= s <= 3 for s in sizes) and sum(sizes) == counts["chunks_made"]
    assert len(sizes) == -(-counts["chunks_made"] // 3)
    hits = cols.search(p.deps, "alice", [coll.id], "fact-1-4-7", k=1)
    assert fake_vertex.requests[-1].embed_task_types == ["RETRIEVAL_QUERY"]
    assert "fact-1-4-7" in hits[0].text


def test_ingest_retries_a_rate_limited_batch_and_writes_each_chunk_once(
    tmp_path: Path, fake_vertex: vertex.FakeVertex
) -> None:
    fake_vertex.default = vertex.embeddings
    p = _pipeline_with(tmp_path, _vertex(fake_vertex, batch_size=3))
    coll = cols.create_collection(
        p.deps, "alice", "c", chunking=ChunkSettings(max_tokens=64, overlap_tokens=0), embedding_model=MODEL
    )
    fake_vertex.push(vertex.embeddings, vertex.rate_limited(retry_delay="7s"))  # the second batch is refused once
    run, _ = cols.add_documents(p.deps, p.sender, "alice", coll.id, [_doc(1)])
    p.drain(advance_clock=True)
    assert run is not None
    done = repo.require(p.deps.store, Run, run.id)[0]
    assert (done.status, done.counters.completed, done.counters.failed) == (RunStatus.COMPLETED, 1, 0)
    counts = done.outputs or {}
    statuses_sent = [status for _, status in fake_vertex.delivered]
    assert statuses_sent.count(429) == 1
    chunks = counts["chunks_made"]
    assert p.deps.search_index.count(coll.active_index) == chunks == counts["chunks_indexed"]
    assert counts["chunks_embedded"] == chunks
    # Each chunk embedded once after the retry: the batch written before the 429 is not embedded again.
    embedded_texts = [t for r, status in fake_vertex.delivered if status == 200 for t in r.embed_texts]
    assert len(embedded_texts) == len(set(embedded_texts)) == chunks
    # The 429 is in the item's history: a retry after the server's 7 s, then the attempt that completed.
    (item,) = repo.scan(p.deps.store, WorkItem, filters=[Filter("run_id", "==", run.id)])
    assert [(h.outcome, h.delay_s) for h in item.history] == [("retry", 7.0), ("completed", None)]


def _outputs(p: Any, run_id: str) -> dict[str, Any]:
    return repo.require(p.deps.store, Run, run_id)[0].outputs or {}


@pytest.fixture
def fake_openai() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as fake:
        yield fake


def _openai(fake: FakeOpenAI, api_key: str | None = "sk-test") -> OpenAICompatibleEmbedder:
    return OpenAICompatibleEmbedder(base_url=fake.base_url, model="bge-small", clock=ManualClock(), api_key=api_key)


def test_openai_compatible_embeddings_come_back_in_input_order(fake_openai: FakeOpenAI) -> None:
    fake_openai.default = openai_chat.embeddings_answer  # answers the data list reversed
    texts = ["alpha", "beta", "gamma"]
    assert _openai(fake_openai).embed(texts, task="document") == [openai_chat.fake_vector(t) for t in texts]
    (sent,) = fake_openai.requests
    assert sent.path == "/v1/embeddings"
    assert sent.body == {"model": "bge-small", "input": texts}
    assert sent.headers["authorization"] == "Bearer sk-test"


def test_openai_compatible_429_is_retryable_with_the_retry_after(fake_openai: FakeOpenAI) -> None:
    fake_openai.push(openai_chat.too_many_requests(retry_after="4"))
    with pytest.raises(RetryableError) as err:
        _openai(fake_openai).embed(["x"], task="query")
    assert err.value.kind is ErrorKind.RATE_LIMITED and err.value.retry_after == 4.0


def test_openai_compatible_5xx_is_retryable_and_4xx_permanent(fake_openai: FakeOpenAI) -> None:
    fake_openai.push(openai_chat.error(502, "bad gateway"), openai_chat.error(401, "bad key"))
    with pytest.raises(RetryableError):
        _openai(fake_openai).embed(["x"], task="query")
    with pytest.raises(PermanentError, match="401"):
        _openai(fake_openai).embed(["x"], task="query")


def test_openai_compatible_answer_with_too_few_vectors_is_malformed(fake_openai: FakeOpenAI) -> None:
    fake_openai.push(openai_chat.Reply(200, b'{"data": [{"index": 0, "embedding": [0.1]}]}'))
    with pytest.raises(Exception, match="1 vectors for 2 texts"):
        _openai(fake_openai).embed(["a", "b"], task="document")
