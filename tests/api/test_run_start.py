"""One active run per job (unless the job allows concurrent runs), under real
concurrency against the served app; a run extracts with the schema it started with."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from common.core.schema import FieldSpec
from common.core.states import RunStatus
from common.ports.extractor import DocumentRef
from tests.api.conftest import Env, User, pdf
from tests.api.served import at_once, serve

N = 20


def _job_with_files(env: Env, user: User, *names: str, **body: Any) -> str:
    job = user.job(**body)
    assert user.upload(job["id"], *(pdf(n) for n in names)).status_code == 201
    env.drain()
    return str(job["id"])


def test_twenty_parallel_starts_make_one_run_and_the_rest_name_it(durable_env: Env) -> None:
    env = durable_env
    job_id = _job_with_files(env, env.alice, "ok-a.pdf")
    with serve(env.app) as server:
        answers = at_once(
            N, lambda _i: server.request("POST", f"/v1/jobs/{job_id}/runs", token=env.alice.token, json_body={})
        )
    assert env.p.deps.store.count("runs") == 1
    (run_id,) = [s.id for s in env.p.deps.store.query("runs").items]
    started = [a for a in answers if a.status == 202]
    refused = [a for a in answers if a.status == 409]
    assert len(started) == 1 and started[0].body["id"] == run_id
    assert len(refused) == N - 1, [(a.status, a.body) for a in answers]
    for a in refused:
        err = a.body["error"]
        assert err["code"] == "run_active"
        assert err["details"]["active_run_id"] == run_id
        assert run_id in err["message"]
        assert a.headers["location"] == f"/v1/runs/{run_id}"


def test_a_job_that_allows_concurrent_runs_starts_every_one(durable_env: Env) -> None:
    env = durable_env
    job_id = _job_with_files(env, env.alice, "ok-a.pdf", concurrent_runs=True)
    assert env.alice.get(f"/v1/jobs/{job_id}").get_json()["concurrent_runs"] is True
    n = 8
    with serve(env.app) as server:
        answers = at_once(
            n, lambda _i: server.request("POST", f"/v1/jobs/{job_id}/runs", token=env.alice.token, json_body={})
        )
    assert [a.status for a in answers] == [202] * n
    assert sorted(a.body["run_number"] for a in answers) == list(range(1, n + 1))


def test_the_next_run_starts_once_the_active_one_has_finished(env: Env) -> None:
    job_id = _job_with_files(env, env.alice, "ok-a.pdf")
    first = env.alice.post(f"/v1/jobs/{job_id}/runs", {}).get_json()
    busy = env.alice.post(f"/v1/jobs/{job_id}/runs", {})
    assert busy.status_code == 409 and busy.get_json()["error"]["details"]["active_run_id"] == first["id"]
    env.drain(until=lambda: env.p.run(first["id"]).status is RunStatus.RUNNING)
    assert env.alice.post(f"/v1/runs/{first['id']}/pause").status_code == 200
    assert env.alice.post(f"/v1/jobs/{job_id}/runs", {}).status_code == 409, "a paused run is active"
    assert env.alice.post(f"/v1/runs/{first['id']}/cancel").status_code == 200
    second = env.alice.post(f"/v1/jobs/{job_id}/runs", {})
    assert second.status_code == 202 and second.get_json()["run_number"] == 2
    env.drain()
    assert env.p.run(second.get_json()["id"]).status is RunStatus.COMPLETED
    assert env.alice.post(f"/v1/jobs/{job_id}/runs", {}).status_code == 202


def test_a_run_extracts_with_the_fields_it_started_with(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    fields = [{"name": "invoice_number"}, {"name": "total", "type": "number"}]
    job_id = _job_with_files(env, env.alice, "ok-a.pdf", "ok-b.pdf", "ok-c.pdf", fields=fields, preset=None)
    run = env.alice.post(f"/v1/jobs/{job_id}/runs", {}).get_json()
    extractor = env.p.extractor
    inner = extractor.extract
    asked: list[list[str]] = []

    def extract_then_edit_the_job(doc: DocumentRef, fields: Sequence[FieldSpec], *, prompt: str = "") -> Any:
        asked.append([f.name for f in fields])
        if len(asked) == 1:  # the user edits the job while the run's first task is being extracted
            edit = {"fields": [{"name": "vendor"}], "prompt": "new", "extractor": "offline"}
            assert env.alice.patch(f"/v1/jobs/{job_id}", edit).status_code == 200
        return inner(doc, fields, prompt=prompt)

    monkeypatch.setattr(extractor, "extract", extract_then_edit_the_job)
    env.drain()
    assert asked == [["invoice_number", "total"]] * 3, "scripted extractor every time, with the run's fields"
    tasks = env.p.tasks(run["id"])
    assert all(t.result is not None and t.result.columns == ["invoice_number", "total"] for t in tasks)
    assert env.p.run(run["id"]).status is RunStatus.COMPLETED
    frozen = env.alice.get(f"/v1/runs/{run['id']}").get_json()["fields"]
    assert [f["name"] for f in frozen] == ["invoice_number", "total"]
    # The next run takes the job as it is now.
    later = env.alice.post(f"/v1/jobs/{job_id}/runs", {}).get_json()
    assert [f["name"] for f in later["fields"]] == ["vendor"]
