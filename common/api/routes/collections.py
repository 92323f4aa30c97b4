"""Search collections: create, list, get, re-model, delete; add and delete documents; search.

A collection's ingest and re-index runs are runs of its ``ingest`` job, at the
platform's routes (``/v1/runs/{id}``, its items, controls and operation).

Every handler passes the caller's owner id to :mod:`common.service.collections`,
which answers NotFound (404) for another user's collection as for a missing one,
and the index filters every read by owner, so no other user's chunk can appear.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from flask import request

from common.api import collection_schemas as cs
from common.api import schemas as s
from common.api.call import Call, Reply, Result, Route
from common.api.errors import ApiError
from common.api.routes._shared import E404, E_BODY, route
from common.core.errors import ConfigError
from common.service import collections as cols
from common.service import tally

# Parts of one upload, at most: each becomes a document and an item of the run.
MAX_UPLOAD_FILES = 100
_MAX_NAME = 255


def _summary(call: Call, collection_id: str) -> cs.CollectionOut:
    coll, _ = cols.get_collection(call.deps, call.owner, collection_id)
    docs = len(cols.list_documents(call.deps, call.owner, coll.id))
    return cs.CollectionOut.of(coll, docs, call.deps.search_index.count(coll.active_index))


@contextmanager
def _model_available() -> Iterator[None]:
    """A model this deployment has not configured (no project for Vertex, no URL for openai) is the request's 422."""
    try:
        yield
    except ConfigError as err:
        raise ApiError(422, "embedding_model_unavailable", err.message, details={"hint": err.hint}) from err


def create_collection(call: Call) -> Result:
    body = call.body_as(cs.CollectionCreate)
    with _model_available():
        coll = cols.create_collection(
            call.deps, call.owner, body.name, chunking=body.chunking.settings(), embedding_model=body.embedding_model
        )
    return Reply(cs.CollectionOut.of(coll, 0, 0), status=201, headers={"Location": f"/v1/collections/{coll.id}"})


def list_collections(call: Call) -> Result:
    items = [
        cs.CollectionOut.of(c, len(cols.list_documents(call.deps, call.owner, c.id)),
                            call.deps.search_index.count(c.active_index))
        for c in cols.list_collections(call.deps, call.owner)
    ]  # fmt: skip
    return cs.CollectionList(items=items)


def get_collection(call: Call) -> Result:
    return _summary(call, call.params["collection_id"])


def update_collection(call: Call) -> Result:
    """A new embedding model: a re-index builds beside the active index; searches use the old until it completes."""
    body = call.body_as(cs.CollectionUpdate)
    cid = call.params["collection_id"]
    with _model_available():
        run = cols.change_embedding_model(call.deps, call.sender, call.owner, cid, body.embedding_model)
    # 202 even when the model is unchanged (no run, no Location): one success status for the route.
    headers = {"Location": f"/v1/runs/{run.id}"} if run is not None else {}
    return Reply(_summary(call, cid), status=202, headers=headers)


def delete_collection(call: Call) -> Result:
    cols.delete_collection(call.deps, call.owner, call.params["collection_id"])
    return Reply(status=204)


def _name(filename: str | None, part: int) -> str:
    name = Path((filename or "").replace("\\", "/")).name
    if any(unicodedata.category(c) in ("Cc", "Cs") for c in name):
        raise ApiError(
            422,
            "invalid_file_name",
            f"the file name {name!r} (file {part + 1}) contains control characters or is not valid Unicode",
            details={"part": part, "hint": "Rename the file; nothing of this request was stored."},
        )
    if name in ("", ".", ".."):
        return "upload"
    return name.encode()[:_MAX_NAME].decode("utf-8", "ignore")


def add_documents(call: Call) -> Result:
    """Store the uploaded files as documents and start a run ingesting the new ones."""
    cid = call.params["collection_id"]
    cols.get_collection(call.deps, call.owner, cid)  # 404 before reading a byte of another user's upload
    cap = call.settings.max_upload_bytes
    if request.content_length is not None and request.content_length > cap + 64 * 1024:
        raise _too_large(cap)
    stored = request.files.getlist("file")
    if not stored:
        raise ApiError(422, "invalid_body", "send the documents as multipart/form-data parts named 'file'")
    if len(stored) > MAX_UPLOAD_FILES:
        raise ApiError(422, "too_many_files", f"send at most {MAX_UPLOAD_FILES} files in one request")
    names = [_name(storage.filename, i) for i, storage in enumerate(stored)]
    docs: list[cols.NewDocument] = []
    total = 0
    for storage, name in zip(stored, names, strict=True):
        data = storage.stream.read(cap + 1)
        total += len(data)
        if total > cap:
            raise _too_large(cap)
        mime = storage.mimetype if storage.mimetype and storage.mimetype != "application/octet-stream" else None
        docs.append(cols.NewDocument(name=name, data=data, mime=mime))
    run, records = cols.add_documents(call.deps, call.sender, call.owner, cid, docs)
    body = cs.DocumentsAdded(
        run=s.RunOut.of(tally.with_live_counters(call.deps.store, run)) if run is not None else None,
        documents=[cs.DocumentOut.of(d) for d in records],
    )
    headers = {"Location": f"/v1/runs/{run.id}"} if run is not None else {}
    return Reply(body, status=202, headers=headers)  # run null: every document was already there


def _too_large(cap: int) -> ApiError:
    return ApiError(
        413,
        "payload_too_large",
        f"one upload of documents may be at most {cap} bytes",
        details={"max_bytes": cap, "hint": "Send the documents in several requests."},
    )


def list_documents(call: Call) -> Result:
    coll, _ = cols.get_collection(call.deps, call.owner, call.params["collection_id"])
    docs = cols.list_documents(call.deps, call.owner, coll.id)
    return cs.DocumentList(items=[cs.DocumentOut.of(d) for d in docs])


def delete_document(call: Call) -> Result:
    cols.delete_document(call.deps, call.owner, call.params["collection_id"], call.params["document_id"])
    return Reply(status=204)


def search_collection(call: Call) -> Result:
    q = call.query_as(cs.SearchQuery)
    hits = cols.search(call.deps, call.owner, [call.params["collection_id"]], q.q, q.k)
    return cs.SearchOut(items=[cs.HitOut.of(h) for h in hits])


_TAG = "collections"

ROUTES: list[Route] = [
    route("POST", "/v1/collections", create_collection, "Create a search collection", _TAG,
          body=cs.CollectionCreate, response=cs.CollectionOut, status=201, errors=(401, 409, 422)),
    route("GET", "/v1/collections", list_collections, "List your collections", _TAG,
          response=cs.CollectionList, errors=(401,)),
    route("GET", "/v1/collections/{collection_id}", get_collection, "Get a collection with its counts", _TAG,
          response=cs.CollectionOut, errors=E404),
    route("PATCH", "/v1/collections/{collection_id}", update_collection,
          "Change the embedding model (re-indexes in the background)", _TAG,
          body=cs.CollectionUpdate, response=cs.CollectionOut, status=202, errors=(401, 404, 409, 422)),
    route("DELETE", "/v1/collections/{collection_id}", delete_collection, "Delete a collection and its index", _TAG,
          status=204, errors=E404),
    route("POST", "/v1/collections/{collection_id}/documents", add_documents,
          "Add documents (multipart, field 'file') and start ingesting them", _TAG,
          response=cs.DocumentsAdded, status=202, body_kind="multipart", errors=(401, 404, 413, 422)),
    route("GET", "/v1/collections/{collection_id}/documents", list_documents, "List a collection's documents", _TAG,
          response=cs.DocumentList, errors=E404),
    route("DELETE", "/v1/collections/{collection_id}/documents/{document_id}", delete_document,
          "Delete a document and its chunks", _TAG, status=204, errors=E404),
    route("GET", "/v1/collections/{collection_id}/search", search_collection,
          "Search a collection (BM25, hybrid with vectors when it has embeddings)", _TAG,
          query=cs.SearchQuery, response=cs.SearchOut, errors=E_BODY),
]  # fmt: skip
