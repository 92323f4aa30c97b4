"""Runs, exports and operations over HTTP, observed in the records and the extractor's calls."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from common.api.app import api_of
from common.core.models import ExtractionTask
from common.core.states import RunStatus, TaskStatus
from common.service import repo
from tests.api.conftest import Env, User, pdf
from tests.support import ScriptedExtractor


def _iso(env: Env, **delta: float) -> str:
    return (env.p.clock.now() + timedelta(**delta)).isoformat()


def _job_with(env: Env, user: User, *names: str, **body: Any) -> str:
    job = user.job(**body)
    assert user.upload(job["id"], *(pdf(n) for n in names)).status_code == 201
    env.drain()  # the uploads' finalize events
    return str(job["id"])


def test_start_a_run_and_poll_it_to_completion(env: Env) -> None:
    job_id = _job_with(env, env.alice, "ok-a.pdf", "ok-b.pdf", "bad-c.pdf")
    r = env.alice.post(f"/v1/jobs/{job_id}/runs", {"priority": "high"})
    assert r.status_code == 202, r.get_json()
    run = r.get_json()
    assert run["status"] == "pending" and run["priority"] == "high" and run["run_number"] == 1
    assert r.headers["Location"] == f"/v1/operations/{run['operation_id']}"
    op = env.alice.get(f"/v1/operations/{run['operation_id']}").get_json()
    assert op["status"] == "running" and op["stage"] == "queued" and op["final"] is False
    env.drain()
    got = env.alice.get(f"/v1/runs/{run['id']}").get_json()
    assert got["status"] == "completed"
    assert got["counters"] == {"total": 3, "completed": 2, "failed": 1, "cancelled": 0, "remaining": 0}
    op = env.alice.get(f"/v1/operations/{run['operation_id']}").get_json()
    assert op["status"] == "done" and op["pct"] == 100.0 and op["final"] is True
    assert (op["done"], op["failed"], op["total"]) == (2, 1, 3)
    failed = env.alice.get(f"/v1/runs/{run['id']}/tasks?status=failed").get_json()["items"]
    assert [t["file_name"] for t in failed] == ["bad-c.pdf"]
    assert failed[0]["error"]["code"] == "unreadable_document"
    assert [r["id"] for r in env.alice.get(f"/v1/jobs/{job_id}/runs").get_json()["items"]] == [run["id"]]
    assert [r["id"] for r in env.alice.get("/v1/runs?status=completed").get_json()["items"]] == [run["id"]]
    assert env.alice.get("/v1/runs?status=running").get_json()["items"] == []
    assert env.alice.get(f"/v1/jobs/{job_id}").get_json()["latest_run"]["status"] == "completed"


def test_invalid_run_requests_are_422(env: Env) -> None:
    job_id = _job_with(env, env.alice, "ok-a.pdf")
    url = f"/v1/jobs/{job_id}/runs"
    cases: list[tuple[dict[str, Any], str]] = [
        ({"schedule_time": _iso(env, minutes=-5)}, "invalid_schedule_time"),
        ({"schedule_time": _iso(env, seconds=0)}, "invalid_schedule_time"),
        ({"schedule_time": _iso(env, days=400)}, "invalid_schedule_time"),
        ({"schedule_time": "2026-05-01T10:00:00"}, "invalid_body"),  # no timezone
        ({"schedule_time": "tomorrow"}, "invalid_body"),
        ({"priority": "asap"}, "invalid_body"),
        ({"priority": 3}, "invalid_body"),
    ]
    for body, code in cases:
        r = env.alice.post(url, body)
        assert r.status_code == 422, body
        assert r.get_json()["error"]["code"] == code, (body, r.get_json())
    assert env.p.deps.store.count("runs") == 0, "nothing was recorded"


def test_a_scheduled_run_starts_at_its_time_under_the_test_clock(env: Env) -> None:
    job_id = _job_with(env, env.alice, "ok-a.pdf")
    at = env.p.clock.now() + timedelta(hours=2)
    run = env.alice.post(f"/v1/jobs/{job_id}/runs", {"schedule_time": at.isoformat()}).get_json()
    env.drain()
    assert env.alice.get(f"/v1/runs/{run['id']}").get_json()["status"] == "pending"
    assert env.alice.get(f"/v1/operations/{run['operation_id']}").get_json()["stage"] == "scheduled"
    env.drain(advance_clock=True)
    got = env.alice.get(f"/v1/runs/{run['id']}").get_json()
    assert got["status"] == "completed"
    assert got["started_at"].startswith(at.strftime("%Y-%m-%dT%H:%M:%S"))


def test_priorities_order_dispatch(env: Env) -> None:
    low = _job_with(env, env.alice, "ok-low1.pdf", "ok-low2.pdf")
    urgent = _job_with(env, env.alice, "ok-urgent1.pdf", "ok-urgent2.pdf")
    normal = _job_with(env, env.alice, "ok-normal1.pdf")
    env.alice.post(f"/v1/jobs/{low}/runs", {"priority": "low"})
    env.alice.post(f"/v1/jobs/{normal}/runs", {})
    env.alice.post(f"/v1/jobs/{urgent}/runs", {"priority": "urgent"})
    env.drain()
    ex = env.p.extractor
    assert isinstance(ex, ScriptedExtractor)
    order = [name.split("-")[1].rstrip("0123456789.pdf") for name in ex.calls]
    assert order == ["urgent", "urgent", "normal", "low", "low"]


def test_cancel_cancels_pending_tasks_and_leaves_running_ones(env: Env) -> None:
    job_id = _job_with(env, env.alice, "ok-a.pdf", "ok-b.pdf", "ok-c.pdf")
    run = env.alice.post(f"/v1/jobs/{job_id}/runs", {}).get_json()
    env.drain(max_deliveries=1)  # run.start: three task messages wait
    tasks = env.p.tasks(run["id"])
    assert [t.status for t in tasks] == [TaskStatus.PENDING] * 3
    # One task is held by a live attempt (a worker elsewhere): it must be left to finish.
    store = env.p.deps.store
    held, version = repo.require(store, ExtractionTask, tasks[0].id)
    held = held.model_copy(
        update={"status": TaskStatus.RUNNING, "attempts": 1, "lease_until": env.p.clock.now() + timedelta(minutes=5)}
    )
    repo.cas(store, held, version)

    r = env.alice.post(f"/v1/runs/{run['id']}/cancel")
    assert r.status_code == 200, r.get_json()
    body = r.get_json()
    assert body["status"] == "cancelled"
    assert body["counters"]["cancelled"] == 2
    env.drain()
    statuses = sorted(t.status.value for t in env.p.tasks(run["id"]))
    assert statuses == ["cancelled", "cancelled", "running"]
    ex = env.p.extractor
    assert isinstance(ex, ScriptedExtractor) and ex.calls == {}, "no pending task started after the cancel"
    op = env.alice.get(f"/v1/operations/{run['operation_id']}").get_json()
    assert op["status"] == "cancelled" and op["final"] is True and op["cancelled"] == 2
    again = env.alice.post(f"/v1/runs/{run['id']}/cancel")
    assert again.status_code == 200, "cancelling twice is harmless"
    assert env.alice.post(f"/v1/runs/{run['id']}/resume").status_code == 409


def test_cancel_a_scheduled_run_before_it_starts(env: Env) -> None:
    job_id = _job_with(env, env.alice, "ok-a.pdf")
    run = env.alice.post(f"/v1/jobs/{job_id}/runs", {"schedule_time": _iso(env, hours=1)}).get_json()
    assert env.alice.post(f"/v1/runs/{run['id']}/cancel").status_code == 200
    env.drain(advance_clock=True)
    assert env.alice.get(f"/v1/runs/{run['id']}").get_json()["status"] == "cancelled"
    assert env.p.tasks(run["id"]) == []


def test_pause_holds_tasks_and_resume_runs_them(env: Env) -> None:
    job_id = _job_with(env, env.alice, "ok-a.pdf", "ok-b.pdf")
    run = env.alice.post(f"/v1/jobs/{job_id}/runs", {}).get_json()
    assert env.alice.post(f"/v1/runs/{run['id']}/pause").status_code == 409, "a pending run cannot be paused"
    env.drain(max_deliveries=1)
    r = env.alice.post(f"/v1/runs/{run['id']}/pause")
    assert r.status_code == 200 and r.get_json()["status"] == "paused"
    env.drain()
    assert [t.status for t in env.p.tasks(run["id"])] == [TaskStatus.PENDING] * 2
    ex = env.p.extractor
    assert isinstance(ex, ScriptedExtractor) and ex.calls == {}
    assert env.alice.get(f"/v1/operations/{run['operation_id']}").get_json()["stage"] == "paused"
    r = env.alice.post(f"/v1/runs/{run['id']}/resume")
    assert r.status_code == 200 and r.get_json()["status"] == "running"
    env.drain()
    got = env.alice.get(f"/v1/runs/{run['id']}").get_json()
    assert got["status"] == "completed" and got["counters"]["completed"] == 2
    assert env.p.exports(run["id"])[0].status.value == "completed"


def test_retry_failed_tasks_then_all(env: Env) -> None:
    job_id = _job_with(env, env.alice, "ok-a.pdf", "bad-b.pdf")
    run = env.alice.post(f"/v1/jobs/{job_id}/runs", {}).get_json()
    r = env.alice.post(f"/v1/runs/{run['id']}/retry", {})
    assert r.status_code == 409, "a run still pending cannot be retried"
    env.drain()
    ex = env.p.extractor
    assert isinstance(ex, ScriptedExtractor)
    assert ex.calls == {"ok-a.pdf": 1, "bad-b.pdf": 1}
    r = env.alice.post(f"/v1/runs/{run['id']}/retry", {"scope": "failed"})
    assert r.status_code == 202, r.get_json()
    assert r.get_json()["retried"] == 1
    assert r.get_json()["run"]["status"] == "running"
    assert r.get_json()["run"]["counters"]["failed"] == 0
    env.drain()
    assert ex.calls == {"ok-a.pdf": 1, "bad-b.pdf": 2}
    got = env.alice.get(f"/v1/runs/{run['id']}").get_json()
    assert got["status"] == "completed" and got["counters"]["failed"] == 1 and got["counters"]["completed"] == 1
    (export,) = env.p.exports(run["id"])
    assert export.status.value == "completed", "the run's export was produced again"
    assert env.alice.get(f"/v1/operations/{run['operation_id']}").get_json()["status"] == "done"

    r = env.alice.post(f"/v1/runs/{run['id']}/retry", {"scope": "all"})
    assert r.status_code == 202 and r.get_json()["retried"] == 2
    env.drain()
    assert ex.calls == {"ok-a.pdf": 2, "bad-b.pdf": 3}
    assert env.p.run(run["id"]).status is RunStatus.COMPLETED
    assert env.alice.post(f"/v1/runs/{run['id']}/retry", {"scope": "sideways"}).status_code == 422


def test_retry_with_nothing_failed_is_409(env: Env) -> None:
    job_id = _job_with(env, env.alice, "ok-a.pdf")
    run = env.alice.post(f"/v1/jobs/{job_id}/runs", {}).get_json()
    env.drain()
    r = env.alice.post(f"/v1/runs/{run['id']}/retry", {})
    assert r.status_code == 409 and r.get_json()["error"]["code"] == "nothing_to_retry"


def test_export_a_completed_run_and_download_it(env: Env) -> None:
    job_id = _job_with(env, env.alice, "ok-a.pdf", "ok-b.pdf")
    run = env.alice.post(f"/v1/jobs/{job_id}/runs", {}).get_json()
    early = env.alice.post(f"/v1/runs/{run['id']}/exports", {"format": "csv"})
    assert early.status_code == 409 and early.get_json()["error"]["code"] == "run_not_completed"
    env.drain()
    r = env.alice.post(f"/v1/runs/{run['id']}/exports", {"format": "csv", "destination": "download"})
    assert r.status_code == 202, r.get_json()
    export = r.get_json()
    assert export["status"] == "pending" and export["url"] is None
    env.drain()
    got = env.alice.get(f"/v1/exports/{export['id']}").get_json()
    assert got["status"] == "completed" and got["row_count"] == 2
    path = got["url"].split("127.0.0.1:8080", 1)[1]
    download = env.alice.client.get(path)  # the signature is the credential
    assert download.status_code == 200
    text = download.get_data().decode("utf-8-sig")
    assert "ok-a#0" in text and "ok-b#0" in text
    assert env.alice.client.get(path.replace("signature=", "signature=f")).status_code == 403
    env.p.clock.advance(7 * 24 * 3600 + 1)
    assert env.alice.client.get(path).status_code == 403, "expired after the configured 7 days"
    listed = env.alice.get(f"/v1/runs/{run['id']}/exports").get_json()["items"]
    assert {e["id"] for e in listed} >= {export["id"]}
    assert env.alice.post(f"/v1/runs/{run['id']}/exports", {"format": "pdf"}).status_code == 422


def test_operation_events_stream_progress_until_final(env: Env) -> None:
    job_id = _job_with(env, env.alice, "ok-a.pdf", "ok-b.pdf", "ok-c.pdf")
    run = env.alice.post(f"/v1/jobs/{job_id}/runs", {}).get_json()

    # Each poll of the stream lets the pipeline handle one more batch.
    def step(_seconds: float) -> None:
        env.drain(max_deliveries=1)

    api_of(env.app).sleep = step
    r = env.alice.get(f"/v1/operations/{run['operation_id']}/events")
    assert r.status_code == 200
    assert r.mimetype == "text/event-stream"
    text = r.get_data(as_text=True)
    events = [block for block in text.split("\n\n") if block.startswith("id:")]
    kinds = [block.split("\n")[1] for block in events]
    assert kinds[-1] == "event: done"
    assert kinds.count("event: progress") >= 2, "progress was streamed before the end"
    assert '"status":"done"' in events[-1] and '"pct":100.0' in events[-1]
    assert env.bob.get(f"/v1/operations/{run['operation_id']}/events").status_code == 404


def test_a_tasks_retry_history_is_returned_with_each_attempts_outcome_error_and_delay(env: Env) -> None:
    job_id = _job_with(env, env.alice, "flaky2-a.pdf")
    run = env.alice.post(f"/v1/jobs/{job_id}/runs", {}).get_json()
    env.drain(advance_clock=True)
    (listed,) = env.alice.get(f"/v1/runs/{run['id']}/tasks").get_json()["items"]
    task = env.alice.get(f"/v1/tasks/{listed['id']}").get_json()
    assert task == listed
    history = task["history"]
    assert [(a["attempt"], a["outcome"]) for a in history] == [(1, "retry"), (2, "retry"), (3, "completed")]
    assert [a["delay_s"] for a in history] == [15.0, 60.0, None], "the policy's delays, as chosen"
    assert [a["error_code"] for a in history] == ["retryable", "retryable", None]
    assert history[0]["error_message"] == "upstream 503"
    assert all(a["started_at"] <= a["ended_at"] for a in history)
    assert history[0]["ended_at"] < history[1]["started_at"]


def test_another_users_task_is_404(env: Env) -> None:
    job_id = _job_with(env, env.alice, "ok-a.pdf")
    run = env.alice.post(f"/v1/jobs/{job_id}/runs", {}).get_json()
    env.drain()
    (task,) = env.alice.get(f"/v1/runs/{run['id']}/tasks").get_json()["items"]
    assert env.bob.get(f"/v1/tasks/{task['id']}").status_code == 404


def test_a_download_link_is_signed_once_for_seven_days_and_renewed_only_near_its_expiry(env: Env) -> None:
    job_id = _job_with(env, env.alice, "ok-a.pdf")
    run = env.alice.post(f"/v1/jobs/{job_id}/runs", {}).get_json()
    env.drain()
    export = env.alice.post(f"/v1/runs/{run['id']}/exports", {"format": "csv"}).get_json()
    env.drain()
    completed_at = env.p.clock.now()
    first = env.alice.get(f"/v1/exports/{export['id']}").get_json()
    assert datetime.fromisoformat(first["url_expires_at"]) == completed_at + timedelta(days=7)
    env.p.clock.advance(3 * 24 * 3600)
    again = env.alice.get(f"/v1/exports/{export['id']}").get_json()
    assert (again["url"], again["url_expires_at"]) == (first["url"], first["url_expires_at"]), "not re-signed"
    path = again["url"].split("127.0.0.1:8080", 1)[1]
    assert env.alice.client.get(path).status_code == 200, "still valid three days later"

    env.p.clock.advance(int(3.5 * 24 * 3600))  # half a day left: renewed for another 7 days
    renewed = env.alice.get(f"/v1/exports/{export['id']}").get_json()
    assert renewed["url"] != first["url"]
    assert datetime.fromisoformat(renewed["url_expires_at"]) == env.p.clock.now() + timedelta(days=7)
    assert env.alice.get(f"/v1/exports/{export['id']}").get_json()["url"] == renewed["url"], "stored for the next read"


def test_a_runs_work_items_are_listed_under_the_generic_name_as_under_tasks(env: Env) -> None:
    job_id = _job_with(env, env.alice, "ok-a.pdf", "bad-b.pdf")
    run = env.alice.post(f"/v1/jobs/{job_id}/runs", {}).get_json()
    env.drain()
    tasks = env.alice.get(f"/v1/runs/{run['id']}/tasks").get_json()
    items = env.alice.get(f"/v1/runs/{run['id']}/items").get_json()
    assert items == tasks and len(items["items"]) == 2
    failed = env.alice.get(f"/v1/runs/{run['id']}/items?status=failed").get_json()["items"]
    assert [i["file_name"] for i in failed] == ["bad-b.pdf"]
    one = items["items"][0]
    assert env.alice.get(f"/v1/items/{one['id']}").get_json() == one
    assert env.bob.get(f"/v1/runs/{run['id']}/items").status_code == 404
    missing = env.bob.get(f"/v1/items/{one['id']}")
    assert missing.status_code == 404 and missing.get_json()["error"]["message"] == f"item {one['id']} not found"
