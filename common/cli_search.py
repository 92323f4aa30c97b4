"""``sluice ingest`` and ``sluice search``: search collections on the embedded backend."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from common.cli_support import DOCUMENTS_FAILED, FAILED, OK, UsageError, add_common, data_dir_lock, load_settings

LOCAL_OWNER = "local"  # as sluice run: what the CLI creates belongs to the local user


def add_search_commands(sub: Any) -> None:
    ing = sub.add_parser("ingest", help="read, chunk (and embed) documents into a search collection")
    ing.add_argument(
        "paths", nargs="+", type=Path, metavar="PATH", help="PDF, text, Markdown or HTML files, or folders"
    )
    ing.add_argument("--collection", required=True, metavar="NAME", help="created when it does not exist")
    ing.add_argument(
        "--embedding-model",
        default="none",
        metavar="MODEL",
        help='for a new collection: "none" (lexical only, the offline default), "hashing-256" (offline, not '
        'semantic), "vertex:text-embedding-005", "openai:MODEL" (SLUICE_EMBED_URL)',
    )
    ing.add_argument("--max-tokens", type=int, default=256, help="chunk budget for a new collection (default 256)")
    ing.add_argument("--overlap", type=int, default=32, help="chunk overlap for a new collection (default 32)")
    add_common(ing)
    ing.set_defaults(func=cmd_ingest)

    sea = sub.add_parser("search", help="search a collection: BM25, with vectors fused in when it has embeddings")
    sea.add_argument("collection", metavar="NAME", help="the collection to search (see sluice ingest)")
    sea.add_argument("query", help="words to look for; quote a phrase")
    sea.add_argument("-k", type=int, default=5, help="how many chunks (default 5)")
    sea.add_argument("--json", action="store_true", help="one JSON object per hit")
    add_common(sea, quiet=False)
    sea.set_defaults(func=cmd_search)


def _files(paths: list[Path]) -> list[Path]:
    from common.extraction.doctext import SUPPORTED_SUFFIXES

    out: list[Path] = []
    for p in paths:
        if p.is_dir():
            out += sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in SUPPORTED_SUFFIXES)
        elif p.is_file():
            out.append(p)
        else:
            raise UsageError(f"{p}: no such file or folder")
    return out


def cmd_ingest(args: argparse.Namespace) -> int:
    from common.bootstrap import local_app
    from common.core.chunking import ChunkSettings
    from common.obs import logging as slog
    from common.service import collections as cols

    slog.configure(args.log_level, "text")
    files = _files(args.paths)
    settings = load_settings(args.data_dir)
    with data_dir_lock(args.data_dir):
        app = local_app(settings)
        deps = app.deps
        coll = cols.find_by_name(deps, LOCAL_OWNER, args.collection) or cols.create_collection(
            deps,
            LOCAL_OWNER,
            args.collection,
            chunking=ChunkSettings(max_tokens=args.max_tokens, overlap_tokens=args.overlap),
            embedding_model=args.embedding_model,
        )
        docs = [cols.NewDocument(name=str(f), data=f.read_bytes()) for f in files]
        # We hold the data directory's lock: a lease in the bus belongs to an ingest that was killed,
        # and its messages must be delivered again now, not when the lease runs out.
        app.runtime.bus.release_leases()
        run, _ = cols.add_documents(deps, app.sender, LOCAL_OWNER, coll.id, docs)
        # Runs left unfinished by an interrupted ingest finish here too: their messages are on the bus.
        app.runtime.drain()
        if run is None:
            print(f"{args.collection}: nothing new ({len(docs)} documents already in the collection)")
            return OK
        return _report(deps, args.collection, run.id)


def _report(deps: Any, collection: str, run_id: str) -> int:
    """The run's stage counts, and each document that failed with its reason: exit 1 if any did
    (the others are in the index), 3 if the run did not complete."""
    from common.core.models import Run, WorkItem
    from common.core.states import TaskStatus
    from common.ports.store import Filter
    from common.service import repo

    run, _ = repo.require(deps.store, Run, run_id)
    out = run.outputs or {}
    by_run = Filter("run_id", "==", run_id)
    failed = list(repo.scan(deps.store, WorkItem, filters=[by_run, Filter("status", "==", TaskStatus.FAILED.value)]))
    print(
        f"{collection}: {out.get('documents_ingested', 0)} documents ingested, {len(failed)} failed "
        f"(run {run.id}, {run.status.value}); pages read {out.get('pages_read', 0)}, "
        f"chunks made {out.get('chunks_made', 0)}, embedded {out.get('chunks_embedded', 0)}, "
        f"indexed {out.get('chunks_indexed', 0)}"
    )
    for item in failed:
        error = item.error or {}
        hint = f" ({error['hint']})" if error.get("hint") else ""
        print(f"  failed: {item.file_name}: {error.get('message', 'unknown error')}{hint}", file=sys.stderr)
    if run.status.value != "completed":
        return FAILED
    return DOCUMENTS_FAILED if failed else OK


def cmd_search(args: argparse.Namespace) -> int:
    from common.bootstrap import bootstrap
    from common.service import collections as cols

    deps = bootstrap(load_settings(args.data_dir))
    coll = cols.find_by_name(deps, LOCAL_OWNER, args.collection)
    if coll is None:
        raise UsageError(f"no collection named {args.collection!r} (sluice ingest --collection creates it)")
    for h in cols.search(deps, LOCAL_OWNER, [coll.id], args.query, k=args.k):
        if args.json:
            print(json.dumps(h.model_dump(exclude={"text"})))
        else:
            print(f"{h.score:.4f}  {h.document} p.{h.page}  {h.snippet}", file=sys.stdout)
    return OK
