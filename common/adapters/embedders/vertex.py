"""Vertex AI text embeddings through google-genai ``models.embed_content``.

The client and the error classification are the Gemini extractor's
(:func:`common.adapters.gcp.gemini.build_vertex_client`,
:func:`~common.adapters.gcp.gemini.classify_vertex_error`): no retries in the
client, 429s with the server's delay penalising the shared rate limiter, the
circuit breaker admitting each call. One call embeds one batch; the limiter
is charged one request per call (Vertex's quota counts requests).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, cast

from common.adapters.gcp.gemini import RateLimiter, build_vertex_client, guarded_vertex_call
from common.adapters.lazy import Lazy
from common.core.errors import MalformedModelOutput
from common.ports.breaker import CircuitBreaker
from common.ports.clock import Clock
from common.ports.embedder import Task

if TYPE_CHECKING:  # pragma: no cover
    from google import genai

# Vertex's text-embedding models take up to 250 texts per request (and 20,000 input tokens).
MAX_BATCH = 250
_TASK_TYPES = {"document": "RETRIEVAL_DOCUMENT", "query": "RETRIEVAL_QUERY"}


class VertexEmbedder:
    dependency = "vertex"  # the circuit breaker it shares with the Gemini extractor

    def __init__(
        self,
        *,
        project: str,
        location: str,
        model: str,
        clock: Clock,
        batch_size: int = 100,
        dimensions: int | None = None,
        limiter: RateLimiter | None = None,
        breaker: CircuitBreaker | None = None,
        timeout_s: float = 60.0,
        credentials: Any = None,
        http_base_url: str | None = None,
    ) -> None:
        if not 1 <= batch_size <= MAX_BATCH:
            raise ValueError(f"batch_size must be 1..{MAX_BATCH}")
        self.model = f"vertex:{model}" + (f"@{dimensions}" if dimensions else "")
        self._model = model
        self.batch_size = batch_size
        self._dimensions = dimensions
        self._project = project
        self._location = location
        self._clock = clock
        self._limiter = limiter
        self._breaker = breaker
        self._timeout_s = timeout_s
        self._credentials = credentials
        self._base_url = http_base_url
        self._client = Lazy(self._build_client)

    def _build_client(self) -> genai.Client:
        return build_vertex_client(
            project=self._project,
            location=self._location,
            credentials=self._credentials,
            base_url=self._base_url,
            timeout_s=self._timeout_s,
        )

    def embed(self, texts: Sequence[str], *, task: Task) -> list[list[float]]:
        from google.genai import types

        if len(texts) > self.batch_size:
            raise ValueError(f"at most {self.batch_size} texts per call, got {len(texts)}")
        if not texts:
            return []
        config = types.EmbedContentConfig(task_type=_TASK_TYPES[task], output_dimensionality=self._dimensions)
        response = self._call(lambda: self._client.get().models.embed_content(
            model=self._model, contents=cast(Any, list(texts)), config=config
        ))  # fmt: skip
        vectors = [list(e.values or []) for e in response.embeddings or []]
        if len(vectors) != len(texts) or any(not v for v in vectors):
            raise MalformedModelOutput(
                f"Vertex AI returned {len(vectors)} embeddings for {len(texts)} texts",
                raw_output="",
                hint="Retry; if it persists, check the embedding model name.",
            )
        return vectors

    def _call(self, fn: Callable[[], Any]) -> Any:
        return guarded_vertex_call(
            fn,
            clock=self._clock,
            limiter=self._limiter,
            breaker=self._breaker,
            not_found_hint=f"Check the collection's embedding model ({self._model}) and SLUICE_EMBED_LOCATION.",
        )
