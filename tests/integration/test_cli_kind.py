"""What the kind commands share (common/cli_kind.py): finding a command's run again, and saying how it ended."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import BaseModel, Field

from common.cli_kind import LOCAL_OWNER, job_key, resume_or_start, unfinished, validated
from common.cli_support import FAILED, UsageError
from common.core.errors import SluiceError
from common.core.models import Job, Run
from common.core.schema import FieldSpec
from common.core.states import RunStatus
from common.service import control, jobs, repo
from tests.support import Pipeline, make_pipeline


def _job(p: Pipeline) -> Job:
    job = jobs.create_job(p.deps, owner=LOCAL_OWNER, name="local job", fields=[FieldSpec(name="total")])
    path = p.tmp / "a.pdf"
    path.write_bytes(b"%PDF-1.4 a")
    jobs.add_upload(p.deps, job, path)
    return job


def _running(p: Pipeline, job: Job) -> Run:
    """A run whose start was handled and whose item is still waiting to be delivered."""
    run = p.start(job)
    p.drain(until=lambda: p.run(run.id).status is RunStatus.RUNNING)
    assert p.run(run.id).status is RunStatus.RUNNING
    return p.run(run.id)


def test_a_paused_run_is_resumed_rather_than_waited_on(tmp_path: Path) -> None:
    p = make_pipeline(tmp_path)
    job = _job(p)
    run = _running(p, job)
    control.pause_run(p.deps, run.id, owner=LOCAL_OWNER)

    found, how = resume_or_start(p.deps, p.sender, job, keep_finished=True)

    assert (found.id, how) == (run.id, "resumed")
    assert repo.require(p.deps.store, Run, run.id)[0].status is RunStatus.RUNNING


def test_a_completed_run_is_kept_when_asked_and_followed_by_a_new_one_otherwise(tmp_path: Path) -> None:
    p = make_pipeline(tmp_path)
    job = _job(p)
    first = p.start(job)
    p.drain(advance_clock=True)
    assert p.run(first.id).status is RunStatus.COMPLETED

    kept, how = resume_or_start(p.deps, p.sender, job, keep_finished=True)
    assert (kept.id, how) == (first.id, "finished")

    new, how = resume_or_start(p.deps, p.sender, job, keep_finished=False)
    assert how == "new" and new.id != first.id and new.run_number == 2


def test_a_paused_run_ends_the_command_with_how_to_go_on(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p = make_pipeline(tmp_path)
    job = _job(p)
    paused = control.pause_run(p.deps, _running(p, job).id, owner=LOCAL_OWNER)

    assert unfinished(paused, job) == FAILED
    assert "run the same command again to resume" in capsys.readouterr().err


def test_a_failed_run_raises_its_own_error(tmp_path: Path) -> None:
    p = make_pipeline(tmp_path)
    job = _job(p)
    run = p.start(job).model_copy(
        update={"status": RunStatus.FAILED, "error": {"message": "the model is gone", "hint": "configure one"}}
    )

    with pytest.raises(SluiceError) as failed:
        unfinished(run, job)
    assert (failed.value.message, failed.value.hint) == ("the model is gone", "configure one")


class _Options(BaseModel):
    rows: int = Field(ge=1)


def test_a_value_that_does_not_validate_is_a_usage_error_naming_it() -> None:
    with pytest.raises(UsageError, match=r"^rows: "):
        validated(_Options, {"rows": 0})


def test_a_commands_job_key_depends_on_its_kind_and_what_it_asked() -> None:
    asked = {"question": "why?"}
    assert job_key("research", asked) == job_key("research", dict(asked))
    assert job_key("research", asked) != job_key("audit", asked)
    assert job_key("research", asked) != job_key("research", {"question": "how?"})
