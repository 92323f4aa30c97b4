"""The ``audit`` kind through the API on the embedded backend: documents and a reference logo
uploaded, one item per (document, auditor), the merged report on the run, findings exported."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from common.api.app import api_of
from tests.api.conftest import Env, Keys, build_env
from tests.audit.generate import A5, DISCLAIMER, Spec, build, logo_png

LOGO = logo_png()
SETTINGS = {
    "disclaimers": [{"text": DISCLAIMER, "pages": "all"}],
    "logo": {"region": "top-left"},
    "logo_file": "logo.png",
}


@pytest.fixture
def env(tmp_path: Path, keys: Keys) -> Iterator[Env]:
    yield build_env(tmp_path, keys)


def _audit_job(env: Env, files: dict[str, bytes], settings: dict[str, Any]) -> str:
    r = env.alice.post(
        "/v1/jobs", {"name": "audit", "kind": "audit", "settings": settings, "exports": [{"format": "csv"}]}
    )
    assert r.status_code == 201, r.get_json()
    job_id = str(r.get_json()["id"])
    assert env.alice.upload(job_id, *files.items()).status_code == 201
    env.drain()
    return job_id


def _run_to_done(env: Env, job_id: str) -> dict[str, Any]:
    run = env.alice.post(f"/v1/jobs/{job_id}/runs", {}).get_json()
    assert run["kind"] == "audit"

    def step(_seconds: float) -> None:
        env.drain(max_deliveries=1)

    api_of(env.app).sleep = step
    events = env.alice.get(f"/v1/operations/{run['operation_id']}/events").get_data(as_text=True)
    assert "event: done" in events
    got: dict[str, Any] = env.alice.get(f"/v1/runs/{run['id']}").get_json()
    return got


def test_an_audit_runs_each_auditor_per_document_and_stores_the_merged_report(env: Env) -> None:
    files = {
        "good.pdf": build(Spec(logo=LOGO)),
        "bad.pdf": build(Spec(logo=LOGO, logo_at="bottom-right", pagesize=A5, disclaimer_pages=[1])),
        "logo.png": LOGO,
    }
    run = _run_to_done(env, _audit_job(env, files, SETTINGS))
    assert run["status"] == "completed"
    # 2 documents x 4 auditors; the logo is the reference, not a document.
    assert run["counters"]["total"] == 8 and run["counters"]["completed"] == 8
    report = run["outputs"]
    assert report["verdict"] == "failed"
    docs = {d["document"]: d for d in report["documents"]}
    assert set(docs) == {"good.pdf", "bad.pdf"}
    good, bad = docs["good.pdf"]["auditors"], docs["bad.pdf"]["auditors"]
    assert {a: good[a]["status"] for a in good} == {
        "disclaimer": "passed",
        "format": "passed",
        "grammar": "skipped",
        "logo": "passed",
    }
    assert good["grammar"]["reason"].startswith("needs a model")
    assert {a: bad[a]["status"] for a in ("disclaimer", "format", "logo")} == dict.fromkeys(
        ("disclaimer", "format", "logo"), "failed"
    )
    assert [f["code"] for f in bad["logo"]["findings"]] == ["logo_moved"]
    assert {(f["code"], f["page"]) for f in bad["disclaimer"]["findings"]} == {
        ("disclaimer_found", 1),
        ("disclaimer_missing", 2),
    }
    assert {f["code"] for f in bad["format"]["findings"]} >= {"page_size"}
    items = env.alice.get(f"/v1/runs/{run['id']}/tasks").get_json()["items"]
    assert sorted(i["file_name"] for i in items if i["file_name"].startswith("good.pdf")) == [
        f"good.pdf · {a}" for a in ("disclaimer", "format", "grammar", "logo")
    ]


def test_the_export_lists_every_finding_as_a_row(env: Env) -> None:
    files = {"bad.pdf": build(Spec(logo=None, disclaimer=None, pages=1)), "logo.png": LOGO}
    run = _run_to_done(env, _audit_job(env, files, SETTINGS))
    env.drain()
    export = env.alice.get(f"/v1/runs/{run['id']}/exports").get_json()["items"][0]
    assert export["status"] == "completed"
    download = env.alice.client.get(export["url"].split("127.0.0.1:8080", 1)[1])
    assert download.status_code == 200
    body = download.get_data().decode("utf-8-sig")
    rows = list(csv.DictReader(io.StringIO(body)))
    codes = sorted((r["auditor"], r["code"]) for r in rows)
    assert ("disclaimer", "disclaimer_missing") in codes and ("logo", "logo_missing") in codes
    assert ("grammar", "skipped") in codes


def test_a_logo_file_that_was_not_uploaded_fails_the_run_at_its_start(env: Env) -> None:
    run = _run_to_done(env, _audit_job(env, {"a.pdf": build(Spec())}, SETTINGS))
    assert run["status"] == "failed"
    assert "logo.png" in str(run.get("error"))


def test_unknown_auditors_are_refused_by_the_settings(env: Env) -> None:
    r = env.alice.post("/v1/jobs", {"name": "a", "kind": "audit", "settings": {"auditors": ["spelling"]}})
    assert r.status_code == 422 and r.get_json()["error"]["code"] == "invalid_settings"
