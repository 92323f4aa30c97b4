"""Review of extracted values: confirm or correct a field, and the gate that holds a run's exports.

A run whose job sets ``review_below`` is completed by the fan-in into
``needs_review`` instead of ``completed`` when any value is under that
confidence (:func:`pending`). Each decision is stored per task and field
(:class:`~common.core.review.FieldReview`, who, when, old and new value, with
the earlier decisions kept); after each one :func:`release_if_reviewed` checks
whether anything is still pending and, if not, completes the run with a
compare-and-set in the transaction that records its exports, exactly as the
fan-in does, then sends them. Exports read the corrections (:func:`corrected`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from common.core.errors import PermanentError
from common.core.models import ExtractionTask, Run
from common.core.review import (
    FieldReview,
    ReviewAction,
    ReviewEntry,
    apply_reviews,
    flagged_fields,
    review_id,
    unresolved,
)
from common.core.schema import Scalar
from common.core.states import RUN_MOVES, RunStatus, TaskStatus, check_transition
from common.ports.store import Filter, Store, Transaction
from common.service import repo
from common.service.context import Context, Deps, Sender

_REVIEW_ATTEMPTS = 40


@dataclass(frozen=True)
class Pending:
    task_id: str
    field: str


def threshold(run: Run) -> float | None:
    return None if run.settings is None else run.settings.review_below


def reviews_of_run(store: Store, run_id: str) -> dict[str, dict[str, FieldReview]]:
    """The run's reviews by task id, then field."""
    out: dict[str, dict[str, FieldReview]] = {}
    for r in repo.scan(store, FieldReview, filters=[Filter("run_id", "==", run_id)]):
        out.setdefault(r.task_id, {})[r.field] = r
    return out


def pending(store: Store, run: Run) -> list[Pending]:
    """Fields of the run's completed tasks under its review threshold and not yet reviewed."""
    limit = threshold(run)
    if limit is None:
        return []
    reviews = reviews_of_run(store, run.id)
    done = [Filter("run_id", "==", run.id), Filter("status", "==", TaskStatus.COMPLETED.value)]
    return [
        Pending(task.id, name)
        for task in repo.scan(store, ExtractionTask, filters=done)
        for name in unresolved(flagged_fields(task, limit), reviews.get(task.id, {}))
    ]


def corrected(store: Store, run_id: str, tasks: Iterator[ExtractionTask]) -> Iterator[ExtractionTask]:
    """``tasks`` with the run's corrections applied (what exports write)."""
    reviews = reviews_of_run(store, run_id)
    for task in tasks:
        yield apply_reviews(task, reviews.get(task.id, {}))


def review_field(
    deps: Deps,
    sender: Sender,
    task: ExtractionTask,
    field: str,
    *,
    action: ReviewAction,
    value: Scalar,
    by: str,
) -> FieldReview:
    """Confirm or correct one field of a completed task; then release the run if nothing else waits."""
    if task.status is not TaskStatus.COMPLETED or task.result is None:
        raise PermanentError(
            f"task {task.id} is {task.status.value}; only a completed task's values can be reviewed",
            code="task_not_completed",
            hint="Retry the run's failed tasks first.",
        )
    if field not in task.result.fields and field not in task.result.columns:
        raise PermanentError(
            f"task {task.id} has no field {field!r}",
            code="unknown_field",
            hint=f"Fields: {', '.join(task.result.fields) or 'none'}.",
        )
    now = deps.clock.now()
    read = task.result.fields[field].value if field in task.result.fields else None
    rid = review_id(task.id, field)

    def tx(t: Transaction) -> FieldReview:
        existing = repo.tx_get(t, FieldReview, rid)
        current = read if existing is None else existing.value
        new = current if action == "confirmed" else value
        entry = ReviewEntry(action=action, old=current, new=new, by=by, at=now)
        history = [] if existing is None else [*existing.history]
        review = FieldReview(
            id=rid,
            owner=task.owner,
            task_id=task.id,
            run_id=task.run_id,
            job_id=task.job_id,
            field=field,
            action="corrected" if action == "corrected" or (existing and existing.action == "corrected") else action,
            original=read,
            value=new,
            by=by,
            at=now,
            history=[*history, entry],
            created_at=now if existing is None else existing.created_at,
            updated_at=now,
        )
        repo.tx_put(t, review)
        return review

    # Reviewers deciding the same field at once each append to its history: every round of
    # conflicts commits one of them, so allow a round per plausible concurrent reviewer.
    review = deps.store.transaction(tx, max_attempts=_REVIEW_ATTEMPTS)
    release_if_reviewed(deps, sender, task.run_id)
    return review


def release_if_reviewed(deps: Deps, sender: Sender, run_id: str) -> Run:
    """A run in needs_review with nothing left to review: complete it and make its exports (exactly once)."""
    from common.service import fanin

    run, version = repo.require(deps.store, Run, run_id)
    if run.status is not RunStatus.NEEDS_REVIEW or pending(deps.store, run):
        return run
    now = deps.clock.now()

    def tx(t: Transaction) -> Run | None:
        snap = t.get(Run.collection, run.id)
        if snap is None or snap.version != version:
            return None  # another reviewer's release (or a cancel) came first
        current = Run.from_doc(snap.data)
        check_transition(RUN_MOVES, current.status, RunStatus.COMPLETED, what="run")
        done = current.model_copy(update={"status": RunStatus.COMPLETED, "updated_at": now})
        repo.tx_put(t, done)
        fanin.create_exports(t, done, set())
        return done

    done = deps.store.transaction(tx)
    if done is None:
        return repo.require(deps.store, Run, run_id)[0]
    fanin.after_run_finished(done, Context(deps, sender, message_id=f"review:{run_id}"))
    return done
