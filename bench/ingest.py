"""Search ingestion and retrieval on the embedded backend, offline.

1. Throughput: ``sluice ingest``'s path (add documents, a run of the collection's
   ``ingest`` job on the local runtime, lexical index) over ../shared/corpus/docs: pages/s, chunks/s.
2. Quality: questions built from the corpus truth (manifest.csv): "invoice
   number N" and "invoice from SELLER dated DATE"; a question is answered when
   a document with that truth is among the first 5 distinct documents.
   recall@5 and MRR for lexical (BM25), vector and hybrid (reciprocal rank
   fusion). The vector search uses the HASHING embedder (hashing-256), which is
   NOT a semantic model: it shows the vector path works, not what a real model
   would score.
3. Latency: 100,000 chunks in one index (the corpus's chunks repeated with
   distinct numbers), p50/p99 of lexical search (the offline default: the
   questions, "ref RNNNNNN" lookups and, one in ten, two of the 30 most frequent
   terms) and of the brute-force vector search (numpy, 256 dims, random vectors).

Ends with one JSON line. Targets: recall@5 >= 0.9 lexical, search p99 <= 50 ms at 100,000 chunks.
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from common.bootstrap import local_app
from common.config import Settings
from common.core.models import Run
from common.core.retrieval import Hit
from common.ports.search_index import IndexedChunk
from common.service import collections as cols
from common.service import repo

OWNER = "bench"


def _questions(corpus: Path) -> list[tuple[str, set[str]]]:
    rows = list(csv.DictReader((corpus / "manifest.csv").open(encoding="utf-8")))
    by_number: dict[str, set[str]] = {}
    by_seller_date: dict[tuple[str, str], set[str]] = {}
    for r in rows:
        name = r["id"] + ".pdf"
        if r["invoice_number"]:
            by_number.setdefault(r["invoice_number"], set()).add(name)
        seller = " ".join(r["seller"].split("\n")[-1].split())
        if seller and r["date"]:
            by_seller_date.setdefault((seller, r["date"]), set()).add(name)
    qs = [(f"invoice number {n}", docs) for n, docs in by_number.items()]
    qs += [(f"invoice from {s} dated {d}", docs) for (s, d), docs in by_seller_date.items()]
    return qs


def _docs_of(hits: Sequence[Hit]) -> list[str]:
    seen: dict[str, None] = {}
    for h in hits:
        seen.setdefault(Path(h.document).name, None)
    return list(seen)


def _score(search: Callable[[str], list[Hit]], questions: Sequence[tuple[str, set[str]]]) -> dict[str, float]:
    found = 0
    rr = 0.0
    for q, relevant in questions:
        docs = _docs_of(search(q))[:5]
        ranks = [i for i, d in enumerate(docs, start=1) if d in relevant]
        if ranks:
            found += 1
            rr += 1 / ranks[0]
    return {"recall_at_5": round(found / len(questions), 3), "mrr": round(rr / len(questions), 3)}


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return round(xs[min(len(xs) - 1, int(q * len(xs)))], 2)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "corpus")
    ap.add_argument("--chunks", type=int, default=100_000)
    ap.add_argument("--queries", type=int, default=200)
    args = ap.parse_args(argv)
    files = sorted((args.corpus / "docs").rglob("*.pdf"))
    out: dict[str, Any] = {"documents": len(files)}
    with tempfile.TemporaryDirectory() as tmp:
        app = local_app(Settings(backend="local", data_dir=Path(tmp), durable=False))
        deps = app.deps
        docs = [cols.NewDocument(name=f.name, data=f.read_bytes()) for f in files]
        lexical = cols.create_collection(deps, OWNER, "lexical")
        t0 = time.perf_counter()
        run, _ = cols.add_documents(deps, app.sender, OWNER, lexical.id, docs)
        app.runtime.drain()
        secs = time.perf_counter() - t0
        assert run is not None
        done = repo.require(deps.store, Run, run.id)[0]
        counts = done.outputs or {}
        pages, chunks = int(counts.get("pages_read", 0)), int(counts.get("chunks_made", 0))
        out |= {
            "run_status": done.status.value,
            "pages": pages,
            "chunks": chunks,
            "failed": done.counters.failed,
            "pages_per_s": round(pages / secs, 1),
            "chunks_per_s": round(chunks / secs, 1),
        }
        print(f"ingest: {len(files)} documents, {pages} pages, {chunks} chunks in {secs:.2f} s ({done.status.value})")

        vec = cols.create_collection(deps, OWNER, "vector", embedding_model="hashing-256")
        cols.add_documents(deps, app.sender, OWNER, vec.id, docs)
        app.runtime.drain()
        index = deps.search_index
        embedder = deps.embedder("hashing-256")
        assert embedder is not None

        def vector_only(q: str) -> list[Hit]:
            v = embedder.embed([q], task="query")[0]
            return [cols._hit(s, s.score, q) for s in index.nearest(OWNER, [vec.active_index], v, 50)]

        questions = _questions(args.corpus)
        out["questions"] = len(questions)
        out["lexical"] = _score(lambda q: cols.search(deps, OWNER, [lexical.id], q, k=50), questions)
        out["vector_hashing_embedder"] = _score(vector_only, questions)
        out["hybrid_hashing_embedder"] = _score(lambda q: cols.search(deps, OWNER, [vec.id], q, k=50), questions)
        for k in ("lexical", "vector_hashing_embedder", "hybrid_hashing_embedder"):
            print(f"{k}: recall@5 {out[k]['recall_at_5']}, MRR {out[k]['mrr']} over {len(questions)} questions")

        out |= _latency(index, args.chunks, args.queries, questions)
    out["targets_met"] = out["lexical"]["recall_at_5"] >= 0.9 and out["lexical_p99_ms"] <= 50
    print(json.dumps(out))
    return 0


def _latency(index: Any, n: int, queries: int, questions: Sequence[tuple[str, set[str]]]) -> dict[str, Any]:
    import numpy as np

    base = [s.chunk for s in index.lexical(OWNER, [c for c in _all_indexes(index)], "invoice", 10_000)]
    rng = random.Random(7)
    big = "bench.big"
    rows: list[IndexedChunk] = []
    t0 = time.perf_counter()
    vectors = np.random.default_rng(7).standard_normal((n, 256)).astype("float32")
    for i in range(n):
        c = base[i % len(base)]
        rows.append(
            IndexedChunk(
                chunk_id=f"c{i}", owner=OWNER, collection_id="big", document_id=f"d{i // 3}", document=f"doc{i // 3}",
                position=i % 3, page=1, page_end=1, start=0, end=len(c.text),
                text=f"{c.text} ref R{i:06d} batch {rng.randint(1, 10**6)}", vector=vectors[i].tolist(),
            )
        )  # fmt: skip
        if len(rows) == 5000:
            index.upsert(big, rows)
            rows = []
    if rows:
        index.upsert(big, rows)
    print(f"latency: {index.count(big)} chunks written in {time.perf_counter() - t0:.1f} s")
    qs = [q for q, _ in questions] + [f"ref R{rng.randrange(n):06d}" for _ in range(queries)]
    rng.shuffle(qs)
    # Queries made only of common words (two of the 30 most frequent terms): FTS5 matches most rows.
    top = [r[0] for r in index._conn().execute("SELECT term FROM chunks_vocab ORDER BY doc DESC LIMIT 30")]
    common = [f"{rng.choice(top)} {rng.choice(top)}" for _ in range(max(1, queries // 10))]
    qs = qs[: queries - len(common)] + common
    index.nearest(OWNER, [big], vectors[0].tolist(), 10)  # builds the cached matrix once
    lex, near, lex_common = [], [], []
    for q in qs:
        t = time.perf_counter()
        index.lexical(OWNER, [big], q, 10)
        lex.append((time.perf_counter() - t) * 1000)
        if q in common:
            lex_common.append(lex[-1])
        v = vectors[rng.randrange(n)].tolist()
        t = time.perf_counter()
        index.nearest(OWNER, [big], v, 10)
        near.append((time.perf_counter() - t) * 1000)
    for name, xs in (("lexical", lex), ("lexical, common words only", lex_common), ("vector", near)):
        print(f"{name} search at {n:,} chunks: p50 {_pct(xs, 0.5)} ms, p99 {_pct(xs, 0.99)} ms")
    return {
        "latency_chunks": n,
        "lexical_p50_ms": _pct(lex, 0.5),
        "lexical_p99_ms": _pct(lex, 0.99),
        "lexical_common_words_p99_ms": _pct(lex_common, 0.99),
        "vector_p50_ms": _pct(near, 0.5),
        "vector_p99_ms": _pct(near, 0.99),
        "mean_lexical_ms": round(statistics.mean(lex), 2),
    }


def _all_indexes(index: Any) -> list[str]:
    return [r[0] for r in index._conn().execute("SELECT DISTINCT index_id FROM chunks")]


if __name__ == "__main__":
    raise SystemExit(main())
