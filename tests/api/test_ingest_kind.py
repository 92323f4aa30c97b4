"""The ``ingest`` job kind through the API: a collection's runs are platform runs, with the
stage counts in their progress at /v1/operations, the platform's controls, concurrent
ingest and re-index runs on one collection, and a document that cannot be read failing
only its own item."""

from __future__ import annotations

import io
import threading
from typing import Any

import pytest

from common.core.models import Run
from common.service import collections as cols
from common.service import ingest, repo
from tests.api.conftest import Env, User


def _md(n: int) -> tuple[str, bytes]:
    text = f"# Note {n}\n\nReference REF-{n:05d} about topic {n}.\n\n" + " ".join(
        f"Sentence {i} of note {n} mentions item W{n}x{i}." for i in range(40)
    )
    return f"note{n}.md", text.encode()


def _add(user: User, cid: str, *files: tuple[str, bytes]) -> Any:
    r = user.client.post(
        f"/v1/collections/{cid}/documents",
        data={"file": [(io.BytesIO(b), name) for name, b in files]},
        content_type="multipart/form-data",
        headers={"Authorization": f"Bearer {user.token}"},
    )
    assert r.status_code == 202, r.get_json()
    return r.get_json()


def _collection(user: User, name: str = "notes") -> dict[str, Any]:
    r = user.post("/v1/collections", {"name": name, "chunking": {"max_tokens": 64, "overlap_tokens": 8}})
    assert r.status_code == 201, r.get_json()
    return dict(r.get_json())


def _operation(user: User, op_id: str) -> dict[str, Any]:
    listed = {o["id"]: o for o in user.get("/v1/operations").get_json()["items"]}
    assert op_id in listed
    return dict(listed[op_id])


def test_an_ingest_runs_stage_counts_are_in_its_progress_at_operations(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    coll = _collection(env.alice)
    run = _add(env.alice, coll["id"], _md(1), _md(2), _md(3))["run"]
    seen: list[dict[str, Any]] = []
    real = ingest.index_document

    def observed(deps: Any, settings: Any, document_id: str) -> Any:
        # Before each document, what a client polling the run's operation sees.
        seen.append(_operation(env.alice, run["operation_id"]))
        env.p.clock.advance(2)  # past the progress writes' coalescing interval
        return real(deps, settings, document_id)

    monkeypatch.setattr(ingest, "index_document", observed)
    env.drain()
    third = seen[2]
    assert (third["status"], third["stage"], third["done"], third["total"]) == ("running", "running", 2, 3)
    assert third["counts"]["pages_read"] == 2 and third["counts"]["chunks_made"] > 0
    assert third["counts"]["chunks_indexed"] == third["counts"]["chunks_made"]
    done = _operation(env.alice, run["operation_id"])
    outputs = env.alice.get(f"/v1/runs/{run['id']}").get_json()["outputs"]
    assert (done["status"], done["stage"], done["done"]) == ("done", "done", 3)
    assert done["counts"] == {k: outputs[k] for k in ("pages_read", "chunks_made", "chunks_embedded", "chunks_indexed")}
    assert done["counts"]["pages_read"] == 3 and done["counts"]["chunks_made"] > third["counts"]["chunks_made"]
    assert env.alice.get(f"/v1/operations/{run['operation_id']}").get_json()["counts"] == done["counts"]


def test_an_ingest_run_pauses_resumes_and_cancels_through_the_platforms_controls(env: Env) -> None:
    coll = _collection(env.alice)
    run = _add(env.alice, coll["id"], _md(1), _md(2))["run"]
    env.drain(max_deliveries=1)
    assert env.alice.post(f"/v1/runs/{run['id']}/pause").status_code == 200
    env.drain()
    assert env.alice.get(f"/v1/runs/{run['id']}").get_json()["status"] == "paused"
    assert env.alice.get(f"/v1/collections/{coll['id']}").get_json()["chunks"] == 0  # no document started
    assert env.alice.post(f"/v1/runs/{run['id']}/resume").status_code == 200
    env.drain()
    assert env.alice.get(f"/v1/runs/{run['id']}").get_json()["status"] == "completed"
    assert env.alice.get(f"/v1/collections/{coll['id']}").get_json()["chunks"] > 0

    other = _collection(env.alice, "other")
    cancelled = _add(env.alice, other["id"], _md(3), _md(4))["run"]
    env.drain(max_deliveries=1)
    assert env.alice.post(f"/v1/runs/{cancelled['id']}/cancel").status_code == 200
    env.drain()
    items = env.alice.get(f"/v1/runs/{cancelled['id']}/items").get_json()["items"]
    assert [i["status"] for i in items] == ["cancelled", "cancelled"]
    assert env.alice.get(f"/v1/collections/{other['id']}").get_json()["chunks"] == 0
    assert env.alice.get(f"/v1/collections/{other['id']}/search?q=REF-00003").get_json()["items"] == []


def test_one_collection_ingests_and_re_indexes_at_once(env: Env) -> None:
    coll = _collection(env.alice)
    _add(env.alice, coll["id"], _md(1), _md(2))
    env.drain()
    reindex = env.alice.patch(f"/v1/collections/{coll['id']}", {"embedding_model": "hashing-64"})
    assert reindex.status_code == 202
    reindex_run = reindex.get_json()["building_run_id"]
    added = _add(env.alice, coll["id"], _md(3))["run"]  # while the re-index has not run yet
    runs = env.alice.get(f"/v1/jobs/{coll['job_id']}/runs").get_json()["items"]
    active = [r for r in runs if r["status"] in ("pending", "running")]
    # The re-index, the new document into the active index, and the same into the index being built.
    assert len(active) == 3 and {reindex_run, added["id"]} <= {r["id"] for r in active}
    env.drain()
    assert all(r["status"] == "completed" for r in env.alice.get(f"/v1/jobs/{coll['job_id']}/runs").get_json()["items"])
    after = env.alice.get(f"/v1/collections/{coll['id']}").get_json()
    assert (after["embedding_model"], after["building_model"], after["building_run_id"]) == ("hashing-64", None, None)
    # The document added during the re-index is in the index searches switched to.
    hits = env.alice.get(f"/v1/collections/{coll['id']}/search?q=REF-00003&k=1").get_json()["items"]
    assert hits and hits[0]["document"] == "note3.md"
    assert after["chunks"] > 0


def test_a_document_that_cannot_be_read_fails_only_its_item(env: Env) -> None:
    coll = _collection(env.alice)
    run = _add(env.alice, coll["id"], _md(1), ("broken.pdf", b"%PDF-1.4 not really a pdf"))["run"]
    env.drain()
    done = env.alice.get(f"/v1/runs/{run['id']}").get_json()
    assert (done["status"], done["counters"]["completed"], done["counters"]["failed"]) == ("completed", 1, 1)
    assert (done["outputs"]["documents_ingested"], done["outputs"]["documents_failed"]) == (1, 1)
    failed = env.alice.get(f"/v1/runs/{run['id']}/items?status=failed").get_json()["items"]
    assert [i["file_name"] for i in failed] == ["broken.pdf"]
    assert "corrupt" in failed[0]["error"]["message"]
    docs = {d["name"]: d for d in env.alice.get(f"/v1/collections/{coll['id']}/documents").get_json()["items"]}
    assert (docs["broken.pdf"]["status"], docs["note1.md"]["status"]) == ("failed", "done")
    assert env.alice.get(f"/v1/collections/{coll['id']}/search?q=REF-00001").get_json()["items"]
    # The platform's retry runs the failed item again, with the run's own settings: it fails again, alone.
    retried = env.alice.post(f"/v1/runs/{run['id']}/retry", {"scope": "failed"})
    assert retried.status_code in (200, 202), retried.get_json()
    env.drain()
    (again,) = env.alice.get(f"/v1/runs/{run['id']}/items?status=failed").get_json()["items"]
    item = env.alice.get(f"/v1/items/{again['id']}").get_json()
    assert item["file_name"] == "broken.pdf"
    assert [h["outcome"] for h in item["history"]] == ["failed", "failed"]
    assert env.alice.get(f"/v1/runs/{run['id']}").get_json()["counters"]["completed"] == 1


def test_the_collections_job_is_made_and_deleted_with_it_and_only_with_it(env: Env) -> None:
    coll = _collection(env.alice)
    job = env.alice.get(f"/v1/jobs/{coll['job_id']}").get_json()
    assert (job["kind"], job["concurrent_runs"]) == ("ingest", True)
    assert env.bob.get(f"/v1/jobs/{coll['job_id']}").status_code == 404
    made_by_hand = env.alice.post("/v1/jobs", {"name": "x", "kind": "ingest", "settings": {"collection_id": "c"}})
    assert made_by_hand.status_code == 422
    assert made_by_hand.get_json()["error"]["code"] == "ingest_job_by_collection"
    assert env.alice.delete(f"/v1/jobs/{coll['job_id']}").status_code == 409
    by_hand = env.alice.post(f"/v1/jobs/{coll['job_id']}/runs")  # a run that names no documents
    assert by_hand.status_code in (201, 202), by_hand.get_json()
    env.drain()
    failed = env.alice.get(f"/v1/runs/{by_hand.get_json()['id']}").get_json()
    assert (failed["status"], failed["error"]["code"]) == ("failed", "ingest_nothing_to_do")
    _add(env.alice, coll["id"], _md(1))
    assert env.alice.delete(f"/v1/collections/{coll['id']}").status_code == 204  # its run still pending
    assert env.alice.get(f"/v1/jobs/{coll['job_id']}").status_code == 404
    env.drain()  # the cancelled run's start finds it gone or cancelled: nothing is indexed
    assert env.alice.get("/v1/collections").get_json()["items"] == []


def test_readers_racing_after_a_re_index_completes_switch_it_once(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    coll = _collection(env.alice)
    _add(env.alice, coll["id"], _md(1), _md(2))
    env.drain()
    env.alice.patch(f"/v1/collections/{coll['id']}", {"embedding_model": "hashing-64"})
    env.drain()  # the re-index run completes; nobody has read the collection since
    index = env.p.deps.search_index
    dropped: list[str] = []
    real_drop = index.drop

    def drop(index_id: str) -> None:
        dropped.append(index_id)
        real_drop(index_id)

    index.drop = drop  # type: ignore[method-assign]
    barrier, all_read = threading.Barrier(12), threading.Barrier(12)
    real_get = repo.get

    def get(store: Any, model: Any, record_id: str) -> Any:
        found = real_get(store, model, record_id)
        if model is Run:
            all_read.wait(timeout=30)  # every reader has seen the stale record and the completed run
        return found

    monkeypatch.setattr(repo, "get", get)
    seen: list[tuple[str, str]] = []

    snap = env.p.deps.store.get(ingest.COLLECTIONS, coll["id"])
    assert snap is not None
    owner = snap.data["owner"]  # the (issuer, subject) owner id the API gave alice

    def read() -> None:
        barrier.wait()
        c, _ = cols.get_collection(env.p.deps, owner, coll["id"])
        seen.append((c.active_index, c.embedding_model))

    threads = [threading.Thread(target=read) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(seen) == 12 and len(set(seen)) == 1
    assert seen[0][1] == "hashing-64" and seen[0][0] != f"{coll['id']}.g1"
    assert dropped == [f"{coll['id']}.g1"]  # the old index, dropped by the one reader whose switch committed
