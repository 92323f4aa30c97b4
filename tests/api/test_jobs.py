"""Jobs and files over HTTP: happy paths, bad inputs, pagination, deletion."""

from __future__ import annotations

from datetime import timedelta

from common.core.models import ExtractionTask, Job, SourceFile
from common.service import repo
from tests.api.conftest import Env, pdf


def test_create_job_with_a_preset_then_get_it(env: Env) -> None:
    job = env.alice.job(prompt="Invoices from 2025")
    assert job["id"].startswith("job_")
    assert [f["name"] for f in job["fields"]][:3] == ["invoice_number", "date", "total"]
    assert job["exports"] == [{"format": "csv", "destination": "download"}]
    got = env.alice.get(f"/v1/jobs/{job['id']}")
    assert got.status_code == 200
    assert got.get_json()["prompt"] == "Invoices from 2025"
    assert got.get_json()["latest_run"] is None


def test_create_job_with_its_own_fields_and_extractor(env: Env) -> None:
    r = env.alice.post(
        "/v1/jobs",
        {
            "name": "receipts",
            "fields": [{"name": "total", "type": "number"}, {"name": "shop"}],
            "exports": [{"format": "xlsx", "destination": "drive:folder1"}],
            "extractor": "offline",
        },
    )
    assert r.status_code == 201
    body = r.get_json()
    assert body["fields"][0] == {"name": "total", "type": "number", "description": "", "choices": []}
    assert body["exports"] == [{"format": "xlsx", "destination": "drive:folder1"}]
    assert body["extractor"] == "offline"
    assert r.headers["Location"] == f"/v1/jobs/{body['id']}"


def test_bad_job_bodies_are_422_with_the_field_named(env: Env) -> None:
    cases = [
        ({}, "name"),
        ({"name": "x"}, "give exactly one of fields or preset"),
        ({"name": "x", "preset": "invoice", "fields": [{"name": "a"}]}, "exactly one"),
        ({"name": 5, "preset": "invoice"}, "name"),
        ({"name": "x", "fields": [{"name": "Not Snake"}]}, "snake_case"),
        ({"name": "x", "preset": "invoice", "exports": [{"format": "pdf"}]}, "format"),
        ({"name": "x", "preset": "invoice", "exports": [{"destination": "ftp:x"}]}, "destination"),
        ({"name": "x", "preset": "invoice", "colour": "red"}, "colour"),
    ]
    for body, needle in cases:
        r = env.alice.post("/v1/jobs", body)
        assert r.status_code == 422, body
        err = r.get_json()["error"]
        assert err["code"] == "invalid_body"
        assert needle in str(err["details"]), (body, err)
    r = env.alice.post("/v1/jobs", {"name": "x", "preset": "nope"})
    assert r.status_code == 422 and r.get_json()["error"]["code"] == "unknown_preset"


def test_malformed_json_is_400(env: Env) -> None:
    r = env.alice.post("/v1/jobs", data="{not json", headers={"Content-Type": "application/json"})
    assert r.status_code == 400
    assert r.get_json()["error"]["code"] == "invalid_json"
    r = env.alice.post("/v1/jobs", json=[1, 2])
    assert r.status_code == 422


def test_unknown_ids_and_routes_are_404_in_the_error_shape(env: Env) -> None:
    for url in ("/v1/jobs/job_nope", "/v1/runs/run_nope", "/v1/exports/x", "/v1/operations/op_x", "/v1/nothing"):
        r = env.alice.get(url)
        assert r.status_code == 404, url
        assert set(r.get_json()["error"]) == {"code", "message", "details"}
    r = env.alice.client.put("/v1/jobs")
    assert r.status_code == 405 and r.get_json()["error"]["code"] == "method_not_allowed"


def test_update_job(env: Env) -> None:
    job = env.alice.job()
    r = env.alice.patch(f"/v1/jobs/{job['id']}", {"name": "renamed", "exports": [{"format": "xlsx"}]})
    assert r.status_code == 200
    assert r.get_json()["name"] == "renamed"
    assert r.get_json()["exports"] == [{"format": "xlsx", "destination": "download"}]
    assert env.alice.patch(f"/v1/jobs/{job['id']}", {"name": ""}).status_code == 422
    assert env.alice.patch(f"/v1/jobs/{job['id']}", {"bogus": 1}).status_code == 422


def test_list_jobs_pages_with_a_cursor_and_sorts(env: Env) -> None:
    made = []
    for i in range(5):
        made.append(env.alice.job(f"job {i}")["id"])
        env.p.clock.advance(1)
    env.bob.job("bob's")
    seen: list[str] = []
    cursor = None
    while True:
        url = "/v1/jobs?limit=2" + (f"&cursor={cursor}" if cursor else "")
        body = env.alice.get(url).get_json()
        seen += [j["id"] for j in body["items"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert seen == list(reversed(made)), "newest first by default, every job once, none of bob's"
    names = [j["name"] for j in env.alice.get("/v1/jobs?sort=name").get_json()["items"]]
    assert names == sorted(names)
    r = env.alice.get("/v1/jobs?sort=sideways")
    assert r.status_code == 422 and r.get_json()["error"]["code"] == "invalid_query"
    r = env.alice.get("/v1/jobs?cursor=garbage")
    assert r.status_code == 400 and r.get_json()["error"]["code"] == "invalid_cursor"
    r = env.alice.get("/v1/jobs?limit=0")
    assert r.status_code == 422


def test_list_jobs_by_created_range_and_by_latest_run_status(env: Env) -> None:
    t0 = env.p.clock.now()
    old = env.alice.job("old")
    env.p.clock.advance(3600)
    new = env.alice.job("new")
    after = (t0 + timedelta(minutes=30)).isoformat().replace("+00:00", "Z")
    items = env.alice.get(f"/v1/jobs?created_after={after}").get_json()["items"]
    assert [j["id"] for j in items] == [new["id"]]
    items = env.alice.get("/v1/jobs", query_string={"created_before": after}).get_json()["items"]
    assert [j["id"] for j in items] == [old["id"]]
    assert env.alice.get(f"/v1/jobs?created_after={after}&sort=name").status_code == 422

    env.alice.upload(new["id"], pdf("ok-a.pdf"))
    env.alice.post(f"/v1/jobs/{new['id']}/runs", {})
    env.drain()
    completed = env.alice.get("/v1/jobs?status=completed").get_json()["items"]
    assert [j["id"] for j in completed] == [new["id"]]
    assert completed[0]["latest_run"]["status"] == "completed"
    idle = env.alice.get("/v1/jobs?status=idle").get_json()["items"]
    assert [j["id"] for j in idle] == [old["id"]]


def test_upload_files_then_list_and_delete_one(env: Env) -> None:
    job = env.alice.job()
    r = env.alice.upload(job["id"], pdf("ok-a.pdf"), pdf("ok-b.pdf"))
    assert r.status_code == 201, r.get_json()
    files = r.get_json()["items"]
    assert [f["name"] for f in files] == ["ok-a.pdf", "ok-b.pdf"]
    assert all(f["status"] == "uploaded" and f["size"] for f in files)
    listed = env.alice.get(f"/v1/jobs/{job['id']}/files").get_json()["items"]
    assert {f["id"] for f in listed} == {f["id"] for f in files}

    record = repo.require(env.p.deps.store, SourceFile, files[0]["id"])[0]
    assert record.blob_uri and env.p.deps.blobs.stat(record.blob_uri) is not None
    assert env.alice.delete(f"/v1/jobs/{job['id']}/files/{files[0]['id']}").status_code == 204
    assert env.p.deps.blobs.stat(record.blob_uri) is None
    listed = env.alice.get(f"/v1/jobs/{job['id']}/files").get_json()["items"]
    assert [f["id"] for f in listed] == [files[1]["id"]]
    again = env.alice.upload(job["id"], pdf("ok-a.pdf"))
    assert again.status_code == 201, "the same bytes can be uploaded again after a delete"


def test_an_upload_over_the_cap_is_413(tmp_path, keys) -> None:
    from tests.api.conftest import build_env

    env = build_env(tmp_path, keys, max_upload_bytes=1000)
    job = env.alice.job()
    r = env.alice.upload(job["id"], ("big.pdf", b"%PDF" + b"x" * 5000))
    assert r.status_code == 413
    assert r.get_json()["error"]["code"] == "payload_too_large"
    assert env.p.files(job["id"]) == []
    r = env.alice.upload(job["id"], ("small.pdf", b"%PDF small"))
    assert r.status_code == 201


def test_upload_without_a_file_part_is_422(env: Env) -> None:
    job = env.alice.job()
    r = env.alice.client.post(
        f"/v1/jobs/{job['id']}/files",
        data={"other": "x"},
        content_type="multipart/form-data",
        headers={"Authorization": f"Bearer {env.alice.token}"},
    )
    assert r.status_code == 422


def test_a_signed_upload_url_takes_the_bytes_and_registers_the_file(env: Env) -> None:
    job = env.alice.job()
    r = env.alice.post(f"/v1/jobs/{job['id']}/uploads", {"name": "ok-signed.pdf", "content_type": "application/pdf"})
    assert r.status_code == 201, r.get_json()
    body = r.get_json()
    assert body["method"] == "PUT"
    path = body["url"].split("127.0.0.1:8080", 1)[1]
    put = env.alice.client.put(path, data=b"%PDF-1.4 signed", headers=body["headers"])
    assert put.status_code == 204, put.get_json()
    env.drain()  # the finalize event registers the upload
    f = repo.require(env.p.deps.store, SourceFile, body["file_id"])[0]
    assert f.status.value == "uploaded" and f.name == "ok-signed.pdf"
    tampered = path.replace("signature=", "signature=0")
    assert env.alice.client.put(tampered, data=b"x").status_code == 403
    too_big = env.alice.post(f"/v1/jobs/{job['id']}/uploads", {"name": "x.pdf", "size": 10**12})
    assert too_big.status_code == 413


def test_delete_job_removes_files_blobs_runs_and_results(env: Env) -> None:
    job = env.alice.job()
    env.alice.upload(job["id"], pdf("ok-a.pdf"))
    run = env.alice.post(f"/v1/jobs/{job['id']}/runs", {}).get_json()
    env.drain()
    (export,) = env.p.exports(run["id"])
    assert export.external_id and env.p.deps.blobs.stat(export.external_id) is not None
    (f,) = env.p.files(job["id"])
    assert env.alice.delete(f"/v1/jobs/{job['id']}").status_code == 204
    store = env.p.deps.store
    assert repo.get(store, Job, job["id"]) is None
    assert env.p.files(job["id"]) == [] and env.p.tasks(run["id"]) == [] and env.p.exports(run["id"]) == []
    assert store.count(ExtractionTask.collection) == 0
    assert f.blob_uri and env.p.deps.blobs.stat(f.blob_uri) is None
    assert env.p.deps.blobs.stat(export.external_id) is None
    assert env.alice.get(f"/v1/runs/{run['id']}").status_code == 404
    assert env.alice.delete(f"/v1/jobs/{job['id']}").status_code == 404


def test_a_job_with_a_run_in_progress_cannot_be_deleted(env: Env) -> None:
    job = env.alice.job()
    env.alice.upload(job["id"], pdf("ok-a.pdf"))
    env.alice.post(f"/v1/jobs/{job['id']}/runs", {})
    r = env.alice.delete(f"/v1/jobs/{job['id']}")
    assert r.status_code == 409 and r.get_json()["error"]["code"] == "job_busy"
