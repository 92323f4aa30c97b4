"""A deterministic hashing embedder for offline tests and benchmarks.

NOT a semantic model: each word and each character trigram of a word is
hashed (blake2b) into one of ``dimensions`` buckets with a sign, and the
vector is L2-normalised. Texts sharing words or spellings end up close;
synonyms do not. It exists so the vector path (batching, storage, cosine
search, rank fusion) runs and is measured without a model; benchmarks that
use it say so.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Sequence

from common.ports.embedder import Task

_WORD = re.compile(r"\w+", re.UNICODE)


class HashingEmbedder:
    def __init__(self, *, dimensions: int = 256, batch_size: int = 256) -> None:
        self.dimensions = dimensions
        self.batch_size = batch_size
        self.model = f"hashing-{dimensions}"
        self.calls = 0  # batches embedded, for tests of batching

    def embed(self, texts: Sequence[str], *, task: Task) -> list[list[float]]:
        if len(texts) > self.batch_size:
            raise ValueError(f"at most {self.batch_size} texts per call, got {len(texts)}")
        self.calls += 1
        return [self._one(t) for t in texts]

    def _one(self, text: str) -> list[float]:
        vec = [0.0] * self.dimensions
        for word in _WORD.findall(text.lower()):
            feats = [word] + [word[i : i + 3] for i in range(max(1, len(word) - 2))] if len(word) > 3 else [word]
            for f in feats:
                h = hashlib.blake2b(f.encode(), digest_size=8).digest()
                bucket = int.from_bytes(h[:4], "little") % self.dimensions
                vec[bucket] += 1.0 if h[4] & 1 else -1.0
        norm = math.sqrt(sum(v * v for v in vec))
        return [v / norm for v in vec] if norm else vec
