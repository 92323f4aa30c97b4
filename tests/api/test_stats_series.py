"""``/v1/stats`` carries completed and failed items per interval, per stage (kind, exports)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from common.core.models import Export, ExtractionTask
from common.ports.store import Filter
from common.service import repo
from tests.api.conftest import Env, User, pdf


def _run(env: Env, user: User, *names: str) -> str:
    job = user.job()
    assert user.upload(job["id"], *(pdf(n) for n in names)).status_code == 201
    env.drain()
    run = user.post(f"/v1/jobs/{job['id']}/runs", {}).get_json()
    env.drain()
    assert user.get(f"/v1/runs/{run['id']}").get_json()["status"] == "completed"
    return str(run["id"])


def _expected(series: dict[str, Any], finished: list[tuple[datetime, str]]) -> list[tuple[int, int]]:
    """Per bucket (completed, failed), from the records' own finish times."""
    start = datetime.fromisoformat(series["start"])
    n = len(series["stages"][0]["buckets"])
    out = [[0, 0] for _ in range(n)]
    for at, status in finished:
        i = int((at - start).total_seconds() // series["interval_s"])
        if 0 <= i < n and status in ("completed", "failed"):
            out[i][0 if status == "completed" else 1] += 1
    return [(c, f) for c, f in out]


def _stage(series: dict[str, Any], name: str) -> list[tuple[int, int]]:
    (stage,) = [s for s in series["stages"] if s["stage"] == name]
    return [(b["completed"], b["failed"]) for b in stage["buckets"]]


def test_items_and_exports_are_counted_in_the_bucket_they_finished_in(env: Env) -> None:
    first = _run(env, env.alice, "ok-a.pdf", "bad-b.pdf")
    env.p.clock.advance(3 * 3600 + 60)
    second = _run(env, env.alice, "ok-c.pdf", "ok-d.pdf", "ok-e.pdf")
    series = env.alice.get("/v1/stats").get_json()["series"]
    assert (series["window"], series["interval_s"]) == ("24h", 3600)
    stages = {s["stage"]: s for s in series["stages"]}
    assert stages["extract"]["unit"] == "documents" and "export" in stages
    assert all(len(s["buckets"]) == 24 for s in stages.values())

    tasks = [
        t
        for r in (first, second)
        for t in repo.scan(env.p.deps.store, ExtractionTask, filters=[Filter("run_id", "==", r)])
    ]
    assert all(t.finished_at is not None for t in tasks)
    got = _stage(series, "extract")
    assert got == _expected(series, [(t.finished_at, t.status.value) for t in tasks if t.finished_at])
    assert sum(c for c, _ in got) == 4 and sum(f for _, f in got) == 1
    assert len([b for b in got if b != (0, 0)]) == 2, "the two runs finished three hours apart"

    exports = [
        e for r in (first, second) for e in repo.scan(env.p.deps.store, Export, filters=[Filter("run_id", "==", r)])
    ]
    assert _stage(series, "export") == _expected(
        series, [(e.finished_at, e.status.value) for e in exports if e.finished_at]
    )
    assert sum(c for c, _ in _stage(series, "export")) == 2


def test_the_last_hour_holds_only_what_finished_in_it_in_five_minute_buckets(env: Env) -> None:
    _run(env, env.alice, "ok-a.pdf")
    env.p.clock.advance(2 * 3600)
    _run(env, env.alice, "ok-b.pdf", "bad-c.pdf")
    series = env.alice.get("/v1/stats?window=1h").get_json()["series"]
    assert (series["window"], series["interval_s"]) == ("1h", 300)
    got = _stage(series, "extract")
    assert len(got) == 12
    assert (sum(c for c, _ in got), sum(f for _, f in got)) == (1, 1)
    assert got[-1] == (1, 1), "the bucket holding now is the last"


def test_another_users_items_are_not_counted_and_a_bad_window_is_422(env: Env) -> None:
    _run(env, env.alice, "ok-a.pdf")
    series = env.bob.get("/v1/stats").get_json()["series"]
    assert all(b["completed"] == b["failed"] == 0 for s in series["stages"] for b in s["buckets"])
    r = env.alice.get("/v1/stats?window=7d")
    assert r.status_code == 422 and r.get_json()["error"]["code"] == "invalid_query"
