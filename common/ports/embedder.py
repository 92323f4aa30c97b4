"""The embedder port: texts in, vectors out, in batches.

Adapters: Vertex AI text embeddings (google-genai ``embed_content``), any
OpenAI-compatible ``/embeddings`` endpoint, and a deterministic hashing
embedder for offline tests and benchmarks (not semantic: it matches shared
words and character trigrams, and says so in its name). "none" is no embedder
at all: a collection without one is searched lexically only.

``embed`` takes at most ``batch_size`` texts; callers split larger lists
(:func:`batches`). Errors are Sluice errors: RetryableError (rate limits with
the server's delay, outages) or PermanentError.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Literal, Protocol, TypeVar

T = TypeVar("T")

Task = Literal["document", "query"]


class Embedder(Protocol):
    # What the vectors come from, e.g. "vertex:text-embedding-005"; an index is built per model.
    model: str
    batch_size: int

    def embed(self, texts: Sequence[str], *, task: Task) -> list[list[float]]:
        """One vector per text, in order. ``task`` lets models that embed queries
        and documents differently (Vertex's task types) do so."""
        ...


def batches(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]
