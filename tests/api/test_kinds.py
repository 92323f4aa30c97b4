"""A job kind declared only in the tests (tests/kinds/wordcount.py) runs
through the API on the embedded backend like extraction does: create with
``kind`` + settings, upload, start a run, watch it to completion, read its
outputs and items."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from common.api.app import api_of
from tests.api.conftest import Env, Keys, build_env
from tests.kinds import wordcount

TEXTS = {
    "a.txt": b"the quick brown fox jumps",
    "b.txt": b"a b cc dd eee",
    "notes/c.txt": b"",
}


@pytest.fixture
def kenv(tmp_path: Path, keys: Keys) -> Iterator[Env]:
    topology = wordcount.topology_file(tmp_path)
    yield build_env(tmp_path, keys, pipeline={"topology": topology})


def _wordcount_job(env: Env, **settings: object) -> str:
    r = env.alice.post(
        "/v1/jobs",
        {"name": "words", "kind": "wordcount", "settings": settings, "exports": [{"format": "csv"}]},
    )
    assert r.status_code == 201, r.get_json()
    job = r.get_json()
    assert job["kind"] == "wordcount"
    files = [(n, b) for n, b in TEXTS.items()] + [("scan.pdf", b"%PDF-1.4 not text")]
    assert env.alice.upload(job["id"], *files).status_code == 201
    env.drain()  # the uploads' finalize events
    return str(job["id"])


def test_a_test_only_kind_runs_through_the_api_to_its_fan_in_output(kenv: Env) -> None:
    job_id = _wordcount_job(kenv, min_length=2)
    assert kenv.alice.get(f"/v1/jobs/{job_id}").get_json()["settings"] == {"min_length": 2}
    run = kenv.alice.post(f"/v1/jobs/{job_id}/runs", {}).get_json()
    assert run["kind"] == "wordcount" and run["status"] == "pending"

    def step(_seconds: float) -> None:
        kenv.drain(max_deliveries=1)

    api_of(kenv.app).sleep = step
    events = kenv.alice.get(f"/v1/operations/{run['operation_id']}/events").get_data(as_text=True)
    assert "event: done" in events

    got = kenv.alice.get(f"/v1/runs/{run['id']}").get_json()
    assert got["status"] == "completed"
    # One item per text file (the PDF is not a wordcount input); words of 2+ letters.
    expected = {name.rsplit("/", 1)[-1]: wordcount.count(b.decode(), 2) for name, b in TEXTS.items()}
    assert got["counters"]["total"] == len(TEXTS) and got["counters"]["completed"] == len(TEXTS)
    assert got["outputs"] == {"total_words": sum(expected.values()), "files": len(TEXTS)}
    items = kenv.alice.get(f"/v1/runs/{run['id']}/tasks").get_json()["items"]
    assert {i["status"] for i in items} == {"completed"}
    # The platform's export writes the items' rows, like extraction's.
    kenv.drain()
    export = kenv.alice.get(f"/v1/runs/{run['id']}/exports").get_json()["items"][0]
    assert export["status"] == "completed"


def test_settings_are_validated_by_the_kinds_model(kenv: Env) -> None:
    r = kenv.alice.post("/v1/jobs", {"name": "w", "kind": "wordcount", "settings": {"min_length": 0}})
    assert r.status_code == 422 and r.get_json()["error"]["code"] == "invalid_settings"
    r = kenv.alice.post("/v1/jobs", {"name": "w", "kind": "wordcount", "settings": {"colour": "red"}})
    assert r.status_code == 422 and r.get_json()["error"]["code"] == "invalid_settings"


def test_an_unknown_kind_is_refused(kenv: Env) -> None:
    r = kenv.alice.post("/v1/jobs", {"name": "w", "kind": "no-such-kind"})
    assert r.status_code == 422 and r.get_json()["error"]["code"] == "unknown_kind"


def test_an_extract_job_still_needs_fields_or_a_preset(kenv: Env) -> None:
    r = kenv.alice.post("/v1/jobs", {"name": "w"})
    assert r.status_code == 422


def test_the_kinds_route_lists_each_kind_with_its_unit_and_settings_schema(kenv: Env) -> None:
    r = kenv.alice.get("/v1/kinds")
    assert r.status_code == 200, r.get_json()
    by_name = {k["name"]: k for k in r.get_json()["items"]}
    assert {"extract", "wordcount"} <= set(by_name)
    assert by_name["extract"]["unit"] == "documents"
    assert by_name["wordcount"]["unit"] == "files"
    assert by_name["wordcount"]["settings_schema"] == wordcount.WordcountSettings.model_json_schema()
    assert by_name["wordcount"]["settings_schema"]["properties"]["min_length"]["minimum"] == 1
    assert kenv.app.test_client().get("/v1/kinds").status_code == 401


def test_the_kinds_route_says_which_kinds_users_create_jobs_of(kenv: Env) -> None:
    by_name = {k["name"]: k for k in kenv.alice.get("/v1/kinds").get_json()["items"]}
    # A collection makes its own ingest job: the console's create form must not offer it.
    assert by_name["ingest"]["user_created"] is False
    assert by_name["extract"]["user_created"] is True
