"""A run's progress carries its kind's own figures only when the kind declares them, and a run of a
kind this process does not know still gets its progress written (without figures)."""

from __future__ import annotations

from pathlib import Path

from common.core.states import OperationStatus
from common.service import progress, repo
from common.service.context import Context
from tests.support import make_pipeline


def test_a_kind_without_figures_reports_none_and_an_unknown_kind_still_reports(tmp_path: Path) -> None:
    p = make_pipeline(tmp_path)
    job = p.job()
    p.upload(job, "ok-a.pdf")
    run = p.start(job)
    p.drain()
    assert p.operation(p.run(run.id)).counts is None  # extract declares no figures

    stranger = p.run(run.id).model_copy(update={"kind": "not-loaded-here", "id": "run-stranger"})
    op = p.operation(p.run(run.id)).model_copy(
        update={"id": stranger.operation_id + "-s", "status": OperationStatus.RUNNING}
    )
    repo.create(p.deps.store, op)
    stranger = stranger.model_copy(update={"operation_id": op.id})
    ctx = Context(p.deps, p.sender, message_id="m-1")
    assert progress.report_run(ctx, stranger, stage="running", status=OperationStatus.DONE, message="x")
    written = repo.require(p.deps.store, type(op), op.id)[0]
    assert (written.status, written.message, written.counts) == (OperationStatus.DONE, "x", None)
