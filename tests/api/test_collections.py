"""Search collections over HTTP: create, add documents, follow the ingest run (a run of the
collection's ``ingest`` job) with its stage counts, search, delete; another user's collection
is 404 and its chunks never appear."""

from __future__ import annotations

import io
from typing import Any

from tests.api.conftest import Env, User


def _md(n: int, seller: str) -> tuple[str, bytes]:
    text = f"# Invoice {n}\n\nInvoice number INV-{n:05d} from {seller} dated 2024-03-{n % 28 + 1:02d}.\n\n" + " ".join(
        f"Line {i}: {n * 3 + i} units of widget model W{i} for the project." for i in range(40)
    )
    return f"inv{n}.md", text.encode()


def _add(user: User, cid: str, *files: tuple[str, bytes]) -> Any:
    return user.client.post(
        f"/v1/collections/{cid}/documents",
        data={"file": [(io.BytesIO(b), name) for name, b in files]},
        content_type="multipart/form-data",
        headers={"Authorization": f"Bearer {user.token}"},
    )


def _collection(user: User, name: str = "invoices", **body: Any) -> str:
    r = user.post("/v1/collections", {"name": name, "chunking": {"max_tokens": 64, "overlap_tokens": 8}, **body})
    assert r.status_code == 201, r.get_json()
    assert r.headers["Location"] == f"/v1/collections/{r.get_json()['id']}"
    return str(r.get_json()["id"])


def test_documents_are_ingested_with_stage_counts_and_answer_searches(env: Env) -> None:
    cid = _collection(env.alice)
    r = _add(env.alice, cid, _md(1, "Acme GmbH"), _md(2, "Globex SA"))
    assert r.status_code == 202, r.get_json()
    run = r.get_json()["run"]
    assert r.headers["Location"] == f"/v1/runs/{run['id']}"
    assert (run["kind"], run["unit"], run["status"]) == ("ingest", "documents", "pending")
    coll = env.alice.get(f"/v1/collections/{cid}").get_json()
    assert run["job_id"] == coll["job_id"]
    env.drain()
    done = env.alice.get(f"/v1/runs/{run['id']}").get_json()
    assert (done["status"], done["counters"]["completed"], done["counters"]["failed"]) == ("completed", 2, 0)
    counts = done["outputs"]
    assert counts["pages_read"] == 2 and counts["chunks_made"] > 4
    assert counts["chunks_indexed"] == counts["chunks_made"] and counts["chunks_embedded"] == 0
    items = env.alice.get(f"/v1/runs/{run['id']}/items").get_json()["items"]
    assert sorted(i["file_name"] for i in items) == ["inv1.md", "inv2.md"]
    coll = env.alice.get(f"/v1/collections/{cid}").get_json()
    assert (coll["documents"], coll["chunks"]) == (2, counts["chunks_made"])
    hits = env.alice.get(f"/v1/collections/{cid}/search?q=Globex&k=3").get_json()["items"]
    assert hits and hits[0]["document"] == "inv2.md" and hits[0]["page"] == 1
    assert "Globex" in hits[0]["snippet"] and hits[0]["score"] > 0


def test_adding_the_same_documents_again_starts_no_run(env: Env) -> None:
    cid = _collection(env.alice)
    assert _add(env.alice, cid, _md(1, "Acme")).status_code == 202
    env.drain()
    again = _add(env.alice, cid, _md(1, "Acme"))
    assert again.status_code == 202 and again.get_json()["run"] is None and "Location" not in again.headers
    assert again.get_json()["documents"][0]["status"] == "done"


def test_deleting_a_document_removes_its_chunks_from_search(env: Env) -> None:
    cid = _collection(env.alice)
    added = _add(env.alice, cid, _md(1, "Acme"), _md(2, "Initech")).get_json()
    env.drain()
    initech = next(d["id"] for d in added["documents"] if d["name"] == "inv2.md")
    assert env.alice.delete(f"/v1/collections/{cid}/documents/{initech}").status_code == 204
    assert env.alice.get(f"/v1/collections/{cid}/search?q=Initech").get_json()["items"] == []
    assert [d["name"] for d in env.alice.get(f"/v1/collections/{cid}/documents").get_json()["items"]] == ["inv1.md"]
    assert env.alice.delete(f"/v1/collections/{cid}/documents/{initech}").status_code == 404


def test_another_users_collection_is_404_and_its_chunks_never_appear(env: Env) -> None:
    alice = _collection(env.alice, "mine")
    _add(env.alice, alice, _md(1, "Secretcorp"))
    bob = _collection(env.bob, "mine")  # the same name is fine: names are per user
    _add(env.bob, bob, _md(2, "Publicorp"))
    env.drain()
    for method, url in [
        ("get", f"/v1/collections/{alice}"),
        ("get", f"/v1/collections/{alice}/documents"),
        ("get", f"/v1/collections/{alice}/search?q=Secretcorp"),
        ("patch", f"/v1/collections/{alice}"),
        ("delete", f"/v1/collections/{alice}"),
    ]:
        kw = {"json": {"embedding_model": "hashing-64"}} if method == "patch" else {}
        assert getattr(env.bob, method)(url, **kw).status_code == 404, url
    assert _add(env.bob, alice, _md(3, "Intruder")).status_code == 404
    assert env.bob.get(f"/v1/collections/{bob}/search?q=Secretcorp").get_json()["items"] == []
    assert [c["id"] for c in env.bob.get("/v1/collections").get_json()["items"]] == [bob]
    run = _add(env.alice, alice, _md(4, "Later")).get_json()["run"]
    assert env.bob.get(f"/v1/runs/{run['id']}").status_code == 404
    assert env.bob.get(f"/v1/operations/{run['operation_id']}").status_code == 404
    assert env.bob.post(f"/v1/runs/{run['id']}/cancel").status_code == 404
    assert env.alice.get(f"/v1/collections/{alice}").get_json()["documents"] == 1 + 1


def test_changing_the_embedding_model_reindexes_in_the_background(env: Env) -> None:
    cid = _collection(env.alice)
    _add(env.alice, cid, _md(1, "Acme"), _md(2, "Globex"))
    env.drain()
    r = env.alice.patch(f"/v1/collections/{cid}", {"embedding_model": "hashing-64"})
    assert r.status_code == 202, r.get_json()
    assert r.get_json()["embedding_model"] == "none" and r.get_json()["building_model"] == "hashing-64"
    env.drain()
    run = env.alice.get(r.headers["Location"]).get_json()
    assert (run["kind"], run["status"], run["outputs"]["purpose"]) == ("ingest", "completed", "reindex")
    assert run["outputs"]["chunks_embedded"] == run["outputs"]["chunks_made"] > 0
    coll = env.alice.get(f"/v1/collections/{cid}").get_json()
    assert (coll["embedding_model"], coll["building_model"]) == ("hashing-64", None)
    assert env.alice.get(f"/v1/collections/{cid}/search?q=Globex").get_json()["items"][0]["document"] == "inv2.md"


def test_bad_requests_are_4xx(env: Env) -> None:
    assert env.alice.post("/v1/collections", {"name": "x", "embedding_model": "nope:m"}).status_code == 422
    unconfigured = env.alice.post("/v1/collections", {"name": "x", "embedding_model": "vertex:text-embedding-005"})
    assert unconfigured.status_code == 422  # this deployment has no SLUICE_PROJECT: the request's, not a 5xx
    assert unconfigured.get_json()["error"]["code"] == "embedding_model_unavailable"
    bad_chunking = {"name": "x", "chunking": {"max_tokens": 20, "overlap_tokens": 15}}
    assert env.alice.post("/v1/collections", bad_chunking).status_code == 422
    cid = _collection(env.alice)
    unchanged = env.alice.patch(f"/v1/collections/{cid}", {"embedding_model": "none"})
    assert unchanged.status_code == 202 and "Location" not in unchanged.headers
    assert env.alice.post("/v1/collections", {"name": "invoices"}).status_code == 409
    assert env.alice.get(f"/v1/collections/{cid}/search?q=x&k=0").status_code == 422
    assert env.alice.get(f"/v1/collections/{cid}/search?q=%22%2A%28").status_code == 200
    assert _add(env.alice, cid).status_code == 422
    assert env.alice.delete(f"/v1/collections/{cid}").status_code == 204
    assert env.alice.get(f"/v1/collections/{cid}").status_code == 404
