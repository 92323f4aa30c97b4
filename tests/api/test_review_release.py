"""A run held in ``needs_review`` is released exactly once when reviewers decide
its last flagged values at the same moment, over real HTTP from 20 threads."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from common.core.messages import ExportRun, Message
from common.core.models import Export, Run
from common.core.schema import DocumentExtraction, FieldSpec, FieldValue
from common.core.states import RunStatus
from common.ports.extractor import DocumentRef
from common.ports.store import Filter
from common.service import repo
from tests.api.conftest import Env, Keys, build_env, pdf
from tests.api.served import Answer, at_once, serve
from tests.support import make_pipeline

N = 20
DOCS = 5  # 5 documents x 4 unsure fields = 20 flagged values: one per thread
UNSURE = 4  # the first four of the preset's fields


class UnsureExtractor:
    """Reads the first four fields of every document with a confidence of 0.5."""

    name = "unsure"

    def extract(self, doc: DocumentRef, fields: Sequence[FieldSpec], *, prompt: str = "") -> DocumentExtraction:
        names = [f.name for f in fields]
        row = [f"{doc.name}:{n}" for n in names]
        return DocumentExtraction(
            columns=names,
            results=[row],
            fields={n: FieldValue(value=f"{doc.name}:{n}", confidence=0.5) for n in names[:UNSURE]},
            row_pages=[1],
            pages=1,
            method="unsure",
        )


@dataclass
class CountingSender:
    """The pipeline's sender, keeping every message it sends."""

    inner: Any
    sent: list[Message] = field(default_factory=list)

    def send(self, message: Message, **kw: Any) -> str:
        self.sent.append(message)
        result: str = self.inner.send(message, **kw)
        return result


@pytest.fixture
def held(tmp_path: Path, keys: Keys) -> Iterator[tuple[Env, CountingSender]]:
    p = make_pipeline(tmp_path, durable=True, extractor=UnsureExtractor())
    counting = CountingSender(p.sender)
    p.sender = counting  # type: ignore[assignment]
    yield build_env(tmp_path, keys, pipeline=p), counting


def _held_run(env: Env) -> str:
    job = env.alice.job(review_below=0.9, exports=[{"format": "csv"}, {"format": "xlsx"}])
    assert env.alice.upload(job["id"], *(pdf(f"doc-{i}.pdf") for i in range(DOCS))).status_code == 201
    env.drain()
    run = env.alice.post(f"/v1/jobs/{job['id']}/runs", {}).get_json()
    env.drain()
    assert env.alice.get(f"/v1/runs/{run['id']}").get_json()["status"] == "needs_review"
    return str(run["id"])


def _flagged(env: Env, run_id: str) -> list[tuple[str, str]]:
    grid = env.alice.get(f"/v1/runs/{run_id}/review").get_json()
    return [(t["task_id"], f["name"]) for t in grid["tasks"] for f in t["fields"] if f["flagged"] and not f["review"]]


def test_twenty_reviewers_deciding_the_last_flagged_values_at_once_release_the_run_once(
    held: tuple[Env, CountingSender],
) -> None:
    env, sender = held
    run_id = _held_run(env)
    flagged = _flagged(env, run_id)
    assert len(flagged) == N
    sender.sent.clear()

    def decide(i: int) -> Answer:
        task_id, name = flagged[i]
        body = {"field": name, "action": "confirmed"} if i % 2 else {"field": name, "action": "corrected", "value": i}
        return server.request("POST", f"/v1/tasks/{task_id}/review", token=env.alice.token, json_body=body)

    with serve(env.app) as server:
        answers = at_once(N, decide)

    assert [a.status for a in answers] == [200] * N, [a.body for a in answers if a.status != 200]
    run = repo.require(env.p.deps.store, Run, run_id)[0]
    assert run.status is RunStatus.COMPLETED
    exports = list(repo.scan(env.p.deps.store, Export, filters=[Filter("run_id", "==", run_id)]))
    assert sorted(e.format.value for e in exports) == ["csv", "xlsx"]
    export_runs = [m for m in sender.sent if isinstance(m, ExportRun)]
    assert sorted(m.export_id for m in export_runs) == sorted(e.id for e in exports)
    assert _flagged(env, run_id) == []


def test_twenty_reviewers_racing_on_the_same_last_value_release_the_run_once(
    held: tuple[Env, CountingSender],
) -> None:
    env, sender = held
    run_id = _held_run(env)
    flagged = _flagged(env, run_id)
    *first, (last_task, last_field) = flagged
    for task_id, name in first:
        r = env.alice.post(f"/v1/tasks/{task_id}/review", {"field": name, "action": "confirmed"})
        assert r.status_code == 200, r.get_json()
    assert env.alice.get(f"/v1/runs/{run_id}").get_json()["status"] == "needs_review"
    sender.sent.clear()

    def decide(i: int) -> Answer:
        body: dict[str, Any] = {"field": last_field, "action": "corrected", "value": f"v{i}"}
        return server.request("POST", f"/v1/tasks/{last_task}/review", token=env.alice.token, json_body=body)

    with serve(env.app) as server:
        answers = at_once(N, decide)

    assert [a.status for a in answers] == [200] * N, [a.body for a in answers if a.status != 200]
    assert repo.require(env.p.deps.store, Run, run_id)[0].status is RunStatus.COMPLETED
    exports = list(repo.scan(env.p.deps.store, Export, filters=[Filter("run_id", "==", run_id)]))
    assert len(exports) == 2
    assert sorted(m.export_id for m in sender.sent if isinstance(m, ExportRun)) == sorted(e.id for e in exports)
    # Every decision is kept in the field's history, in the order they committed.
    task = env.alice.get(f"/v1/tasks/{last_task}/review").get_json()
    (decided,) = [f for f in task["fields"] if f["name"] == last_field]
    assert len(decided["history"]) == N
    assert decided["value"] == decided["history"][-1]["new"]


def test_a_value_reviewed_while_the_fan_in_holds_the_run_still_releases_it(
    held: tuple[Env, CountingSender], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fan-in reads what waits, then a reviewer decides the last value while the run
    is still running (no release: the run is not held yet), then the fan-in holds the run."""
    from common.service import review

    env, _ = held
    job = env.alice.job(review_below=0.9)
    assert env.alice.upload(job["id"], pdf("doc-0.pdf")).status_code == 201
    env.drain()
    real = review.pending
    interleaved: list[str] = []

    def pending_then_reviewed(store: Any, run: Run) -> list[review.Pending]:
        seen = real(store, run)
        if run.status is RunStatus.RUNNING and seen and not interleaved:
            interleaved.append(run.id)
            for p in seen:  # a reviewer at that moment: the run is running, so nothing is released
                r = env.alice.post(f"/v1/tasks/{p.task_id}/review", {"field": p.field, "action": "confirmed"})
                assert r.status_code == 200, r.get_json()
        return seen

    monkeypatch.setattr(review, "pending", pending_then_reviewed)
    run = env.alice.post(f"/v1/jobs/{job['id']}/runs", {}).get_json()
    env.drain()
    assert interleaved == [run["id"]]
    assert env.alice.get(f"/v1/runs/{run['id']}").get_json()["status"] == "completed"
    assert len(env.p.exports(run["id"])) == 1
