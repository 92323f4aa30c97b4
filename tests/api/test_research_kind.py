"""The ``research`` kind through the API on the embedded backend: a collection ingested first, the
OpenAI-compatible adapter's real HTTP client, a fake model server; the report downloaded by its signed link."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.api.conftest import Env, Keys, build_env
from tests.fakes.openai_chat import FakeOpenAI
from tests.fakes.research_model import ResearchModel
from tests.research import data


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as f:
        yield f


def _env(tmp_path: Path, keys: Keys, fake: FakeOpenAI | None) -> Env:
    model = (
        {}
        if fake is None
        else {"text_model": "openai", "openai_base_url": fake.base_url, "openai_model": "fake", "openai_rpm": 100_000}
    )
    env = build_env(tmp_path, keys, pipeline=model or None)
    chunking = {"max_tokens": 32, "overlap_tokens": 0}
    r = env.alice.post("/v1/collections", {"name": "handbook", "chunking": chunking})
    assert r.status_code == 201, r.get_json()
    added = env.alice.client.post(
        f"/v1/collections/{r.get_json()['id']}/documents",
        data={"file": [(io.BytesIO(d.data), d.name) for d in data.documents()]},
        content_type="multipart/form-data",
        headers={"Authorization": f"Bearer {env.alice.token}"},
    )
    assert added.status_code in (200, 201, 202), added.get_json()
    env.drain()
    return env


def _settings(**kw: Any) -> dict[str, Any]:
    return {"question": "What does the handbook say?", "collections": ["handbook"], **kw}


def test_a_research_job_runs_through_the_api_and_its_report_downloads(
    tmp_path: Path, keys: Keys, fake: FakeOpenAI
) -> None:
    fake.default = ResearchModel(data.SUBQUESTIONS, fail=[data.EXPENSES])
    env = _env(tmp_path, keys, fake)
    r = env.alice.post("/v1/jobs", {"name": "r", "kind": "research", "settings": _settings(k=3)})
    assert r.status_code == 201, r.get_json()
    job = r.get_json()
    assert job["settings"]["collections"] != ["handbook"]  # resolved to the collection's id
    run = env.alice.post(f"/v1/jobs/{job['id']}/runs", {}).get_json()
    env.drain(advance_clock=True)

    got = env.alice.get(f"/v1/runs/{run['id']}").get_json()
    assert got["status"] == "completed" and got["unit"] == "sub-questions" and got["phase"] == "writing"
    assert (got["counters"]["completed"], got["counters"]["failed"]) == (2, 1)
    assert got["outputs"]["failed_subquestions"] == [data.EXPENSES]
    files = env.alice.get(f"/v1/runs/{run['id']}/files").get_json()["items"]
    assert [f["name"] for f in files] == ["report.md", "report.pdf"]
    md = env.alice.client.get(files[0]["url"].split("127.0.0.1:8080", 1)[1])  # the signature is the credential
    assert md.status_code == 200 and md.data.decode().startswith("# What the collection says")
    assert "1. handbook.pdf, page 2" in md.data.decode()
    pdf = env.alice.client.get(files[1]["url"].split("127.0.0.1:8080", 1)[1])
    assert pdf.status_code == 200 and pdf.data.startswith(b"%PDF") and pdf.mimetype == "application/pdf"
    # Another user sees neither the run nor its files.
    assert env.bob.get(f"/v1/runs/{run['id']}/files").status_code == 404


def test_without_a_text_model_a_research_job_is_refused_before_it_exists(tmp_path: Path, keys: Keys) -> None:
    env = _env(tmp_path, keys, None)
    r = env.alice.post("/v1/jobs", {"name": "r", "kind": "research", "settings": _settings()})
    assert r.status_code == 422 and r.get_json()["error"]["code"] == "not_configured"
    assert [j for j in env.alice.get("/v1/jobs").get_json()["items"] if j["kind"] == "research"] == []


def test_another_users_collection_is_refused_at_create(tmp_path: Path, keys: Keys, fake: FakeOpenAI) -> None:
    env = _env(tmp_path, keys, fake)
    r = env.bob.post("/v1/jobs", {"name": "r", "kind": "research", "settings": _settings()})
    assert r.status_code == 422 and r.get_json()["error"]["code"] == "unknown_collection"


def test_a_run_without_files_lists_none(tmp_path: Path, keys: Keys, fake: FakeOpenAI) -> None:
    env = _env(tmp_path, keys, fake)
    job = env.alice.post("/v1/jobs", {"name": "r", "kind": "research", "settings": _settings()}).get_json()
    run = env.alice.post(f"/v1/jobs/{job['id']}/runs", {}).get_json()
    assert env.alice.get(f"/v1/runs/{run['id']}/files").get_json() == {"items": []}
