"""Hostile request bodies: multi-file uploads store all their files or none, long
names are shortened, and JSON that is too deep or not declared JSON is refused."""

from __future__ import annotations

import json
from typing import Any, BinaryIO

import pytest

from tests.api.conftest import Env, pdf


def _stored(env: Env, job_id: str) -> tuple[int, list[str]]:
    """The job's file records and the objects in the uploads bucket."""
    uploads = env.p.deps.bucket_uri("uploads", "x").split("://", 1)[1].split("/", 1)[0]
    blobs = [b.name for b in env.p.deps.blobs.list(uploads, prefix=f"jobs/{job_id}/")]
    return len(env.p.files(job_id)), blobs


def test_a_request_with_one_invalid_file_name_stores_none_of_its_files(env: Env) -> None:
    job = env.alice.job()
    r = env.alice.upload(job["id"], pdf("ok-a.pdf"), ("bad\x01name.pdf", b"%PDF-1.4 b"), pdf("ok-c.pdf"))
    assert r.status_code == 422, r.get_json()
    err = r.get_json()["error"]
    assert err["code"] == "invalid_file_name" and err["details"]["part"] == 1
    env.drain()
    assert _stored(env, job["id"]) == (0, [])


def test_a_storage_failure_midway_leaves_no_file_of_the_request(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    job = env.alice.job()
    blobs = env.p.deps.blobs
    real = blobs.put_stream
    calls: list[str] = []

    def put_stream(uri: str, stream: BinaryIO, **kw: Any) -> Any:
        calls.append(uri)
        if len(calls) == 2:
            raise OSError("disk full")
        return real(uri, stream, **kw)

    monkeypatch.setattr(blobs, "put_stream", put_stream)
    r = env.alice.upload(job["id"], pdf("ok-a.pdf"), pdf("ok-b.pdf"), pdf("ok-c.pdf"))
    assert r.status_code == 500
    env.drain()  # the first object's finalize event finds nothing to register
    assert _stored(env, job["id"]) == (0, [])
    monkeypatch.setattr(blobs, "put_stream", real)
    again = env.alice.upload(job["id"], pdf("ok-a.pdf"), pdf("ok-b.pdf"), pdf("ok-c.pdf"))
    assert again.status_code == 201
    assert sorted(f["name"] for f in again.get_json()["items"]) == ["ok-a.pdf", "ok-b.pdf", "ok-c.pdf"]
    assert all(f["status"] == "uploaded" for f in again.get_json()["items"])


def test_a_name_longer_than_255_bytes_is_shortened_keeping_its_extension(env: Env) -> None:
    job = env.alice.job()
    r = env.alice.upload(job["id"], ("ü" * 1000 + ".pdf", b"%PDF-1.4 long"), pdf("ok-b.pdf"))
    assert r.status_code == 201, r.get_json()
    names = sorted(f["name"] for f in r.get_json()["items"])
    long_name = names[1]
    assert names[0] == "ok-b.pdf"
    assert len(long_name.encode()) <= 255 and long_name.endswith(".pdf")
    assert long_name == "ü" * ((255 - 4) // 2) + ".pdf"
    env.drain()
    assert _stored(env, job["id"])[0] == 2


def test_a_long_name_without_an_extension_is_cut_at_a_character_boundary(env: Env) -> None:
    job = env.alice.job()
    r = env.alice.upload(job["id"], ("a" + "€" * 300, b"%PDF-1.4 x"))
    assert r.status_code == 201
    (name,) = [f["name"] for f in r.get_json()["items"]]
    assert name == "a" + "€" * 84 and len(name.encode()) == 253


@pytest.mark.parametrize("body", ["[" * 10_000, "[" * 5_000 + "]" * 5_000, '{"name":' * 10_000])
def test_deeply_nested_json_is_a_400(env: Env, body: str) -> None:
    r = env.alice.post("/v1/jobs", data=body, content_type="application/json")
    assert r.status_code == 400
    assert r.get_json()["error"]["code"] == "invalid_json"


def test_a_json_body_sent_as_text_plain_is_a_415(env: Env) -> None:
    body = json.dumps({"name": "x", "preset": "invoice"})
    r = env.alice.post("/v1/jobs", data=body, content_type="text/plain")
    assert r.status_code == 415
    assert r.get_json()["error"]["code"] == "unsupported_media_type"
    assert env.p.deps.store.count("jobs") == 0
    ok = env.alice.post("/v1/jobs", data=body, content_type="application/json; charset=utf-8")
    assert ok.status_code == 201


def test_the_same_bytes_twice_in_one_request_are_one_file_with_both_names(env: Env) -> None:
    job = env.alice.job()
    r = env.alice.upload(job["id"], ("a.pdf", b"%PDF-1.4 same"), ("b.pdf", b"%PDF-1.4 same"), pdf("c.pdf"))
    assert r.status_code == 201
    assert sorted(f["name"] for f in r.get_json()["items"]) == ["a.pdf", "c.pdf"]
    (same,) = [f for f in env.p.files(job["id"]) if f.name == "a.pdf"]
    assert same.duplicate_names == ["b.pdf"]
