"""A run's fan-out writes its work items a chunk per commit: a thousand
documents are not a thousand commits (an fsync each on the embedded store)
before the first item is sent."""

from __future__ import annotations

from common.core.states import RunStatus
from common.ports.store import ChangeFeed
from common.service import repo
from tests.support import Pipeline


def test_a_run_of_450_documents_is_fanned_out_in_a_few_commits(pipeline: Pipeline) -> None:
    job = pipeline.job()
    for i in range(450):
        pipeline.upload(job, f"ok-{i:03d}.pdf")
    pipeline.drain()
    run = pipeline.start(job)
    store = pipeline.deps.store
    assert isinstance(store, ChangeFeed)  # the embedded store counts its commits
    before = store.change_count()

    pipeline.drain(until=lambda: pipeline.run(run.id).status is not RunStatus.PENDING)

    assert len(pipeline.tasks(run.id)) == 450
    assert pipeline.run(run.id).counters.total == 450
    commits = store.change_count() - before
    assert commits <= 450 // repo.CREATE_CHUNK + 5, f"{commits} commits to fan out 450 items"
