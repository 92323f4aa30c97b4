"""A kind's effectful run steps: ``plan`` (before its items) and ``finish`` (after them).

Both are platform-owned, for kinds that declare them (:class:`common.kinds.Kind`):

* ``plan`` runs in the run's start handler instead of the pure fan-out. One
  delivery claims the step on the run (compare-and-set, for a lease); the
  specs it returns are saved on the run in a transaction that keeps the first
  saved plan, so a redelivered or concurrent start reuses that plan and never
  calls the model again. A delivery that finds the step held waits for the
  holder's lease to end (a delayed start) and looks again.
* ``finish`` is its own message (``<kind>.finish``), sent by the fan-in when
  every item is terminal (:func:`common.service.fanin.settle_run`); the run
  stays running in phase "writing". Its outputs are saved on the run once, and
  the fan-in then completes the run with them; a run cancelled, paused or
  failed meanwhile does not finish.

Errors are classified as an item's are: a RetryableError is retried by the
retry policy (a delayed message; the step's attempts are counted on the run),
anything else fails the run with the error recorded.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Literal

from common import kinds
from common.core import lifecycle
from common.core import steps as core
from common.core.errors import ErrorKind, PermanentError, RetryableError, SluiceError
from common.core.messages import FinishRun, Message
from common.core.models import Job, Run, StepSpend, StepState, WorkItem
from common.core.states import OperationStatus, RunStatus
from common.kinds import ItemSpec, Kind, StepCall
from common.obs.logging import fields
from common.ports.store import Filter, Transaction
from common.service import fanin, lifecycle_events, progress, repo, tally
from common.service.context import Context

log = logging.getLogger(__name__)

# A delivery that found the step held looks again this long after the holder's lease ends.
LEASE_GRACE_S = 2.0
StepName = Literal["plan", "finish"]


def _lease_s(ctx: Context, kind: Kind) -> float:
    return kind.item_lease_s or ctx.settings.task_lease_s


def specs_of(plan: list[dict[str, Any]]) -> list[ItemSpec]:
    return [
        ItemSpec(
            key=str(d["key"]),
            name=str(d["name"]),
            params=dict(d.get("params") or {}),
            duplicate_names=tuple(d.get("duplicate_names") or ()),
        )
        for d in plan
    ]


# -- plan ------------------------------------------------------------------------------


def plan_items(run: Run, kind: Kind, job: Job, ctx: Context) -> list[ItemSpec] | None:
    """The run's items from its kind's plan: the saved plan, or one made now and saved.

    None: no items now -- another delivery is planning (this one looks again
    when its lease ends), a failed attempt is retried later, or the run failed.
    """
    assert kind.plan is not None
    if run.plan is not None:
        return specs_of(run.plan)
    current, step = _claim(run.id, "plan", kind, ctx, can=lambda r: r.status is RunStatus.PENDING and r.plan is None)
    if step is None:
        if current.plan is not None:
            return specs_of(current.plan)
        if current.status is RunStatus.PENDING:
            _look_again(kind.start(current), current, current.plan_step, ctx)
        return None
    progress.report_run(ctx, current, stage="planning")
    settings = kind.validate_settings(job.kind_settings)
    call = StepCall(ctx=ctx, job=job, run=current, settings=settings, attempt=step.attempts)
    outcome = _call(kind, "plan", lambda: kind.plan(call) if kind.plan is not None else [])
    if isinstance(outcome, SluiceError):
        _step_failed(current, kind, "plan", step.attempts, outcome, ctx)
        return None
    if not outcome:
        err = PermanentError(f"the {kind.name} kind's plan made no work items", code="empty_plan")
        _step_failed(current, kind, "plan", step.attempts, err, ctx)
        return None
    saved = _save_plan(run.id, outcome, call.spends, ctx)
    return None if saved is None else specs_of(saved)


def _save_plan(
    run_id: str, specs: list[ItemSpec], spends: list[StepSpend], ctx: Context
) -> list[dict[str, Any]] | None:
    """Save the plan unless one is saved already (the first saved plan wins); the run's plan, None if it is over."""
    doc = [core.spec_doc(s.key, s.name, s.params, s.duplicate_names) for s in specs]
    now = ctx.now()

    def tx(t: Transaction) -> list[dict[str, Any]] | None:
        current = repo.tx_require(t, Run, run_id)
        if current.plan is not None:
            log.info("a plan was saved first by another attempt; using it")
            return current.plan
        if current.status is not RunStatus.PENDING:
            return None  # cancelled (or failed) while planning: nothing to start
        update = {"plan": doc, "step_usage": [*current.step_usage, *spends], "updated_at": now}
        repo.tx_put(t, current.model_copy(update=update))
        return doc

    saved: list[dict[str, Any]] | None = ctx.store.transaction(tx)
    if saved is doc:
        log.info("plan saved", extra=fields(items=len(doc)))
    return saved


# -- finish -----------------------------------------------------------------------------


def finish_run(msg: FinishRun, ctx: Context) -> None:
    """A run's ``<kind>.finish``: its kind's finish step, once, then the fan-in completes the run."""
    run, _ = repo.require(ctx.store, Run, msg.run_id)
    kind = kinds.get(run.kind)
    if kind.finish is None:
        raise PermanentError(f"the {kind.name} kind has no finish step", code="no_finish_step")
    if run.status is not RunStatus.RUNNING:
        # Completed: done already. Paused: resuming sends this again. Cancelled or failed: nothing follows.
        log.info("run is %s; no finish", run.status.value)
        return
    if run.finish_outputs is not None:
        fanin.settle_run(ctx, run.id)  # saved, but the completion may have been lost to a crash
        return
    if tally.any_open(ctx.store, run.id):
        log.info("an item of the run is open again; its fan-in asks for the finish")
        return

    def can(r: Run) -> bool:
        return r.status is RunStatus.RUNNING and r.finish_outputs is None

    current, step = _claim(run.id, "finish", kind, ctx, can=can)
    if step is None:
        if can(current):
            _look_again(kind.finish_of(current), current, current.finish_step, ctx)
        elif current.finish_outputs is not None:
            fanin.settle_run(ctx, run.id)
        return
    job = current.frozen(repo.require(ctx.store, Job, current.job_id)[0])
    items = list(repo.scan(ctx.store, WorkItem, filters=[Filter("run_id", "==", run.id)]))
    settings = kind.validate_settings(job.kind_settings)
    call = StepCall(ctx=ctx, job=job, run=current, settings=settings, attempt=step.attempts, items=items)
    outcome = _call(kind, "finish", lambda: kind.finish(call) if kind.finish is not None else {})
    if isinstance(outcome, SluiceError):
        _step_failed(current, kind, "finish", step.attempts, outcome, ctx)
        return
    if _save_finish(run.id, outcome, call.spends, ctx):
        log.info("finish saved", extra=fields(kind=kind.name))
    fanin.settle_run(ctx, run.id)


def _save_finish(run_id: str, outputs: dict[str, Any], spends: list[StepSpend], ctx: Context) -> bool:
    """Save the finish's outputs once, on a run still running (a cancelled run does not finish)."""
    now = ctx.now()

    def tx(t: Transaction) -> bool:
        current = repo.tx_require(t, Run, run_id)
        if current.status is not RunStatus.RUNNING or current.finish_outputs is not None:
            return False
        update = {"finish_outputs": outputs, "step_usage": [*current.step_usage, *spends], "updated_at": now}
        repo.tx_put(t, current.model_copy(update=update))
        return True

    saved: bool = ctx.store.transaction(tx)
    return saved


# -- shared ---------------------------------------------------------------------------------


def _field(step: StepName) -> str:
    return f"{step}_step"


def _claim(
    run_id: str, step: StepName, kind: Kind, ctx: Context, *, can: Callable[[Run], bool]
) -> tuple[Run, StepState | None]:
    """Claim the run's step for this delivery (compare-and-set on the run); the run, and the step if claimed."""
    now = ctx.now()
    lease = _lease_s(ctx, kind)
    phase = "planning" if step == "plan" else "writing"

    def tx(t: Transaction) -> tuple[Run, StepState | None]:
        current = repo.tx_require(t, Run, run_id)
        if not can(current):
            return current, None
        claimed = core.claim(
            getattr(current, _field(step)), message_id=ctx.message_id, delivery=ctx.attempt, now=now, lease_s=lease
        )
        if claimed is None:
            return current, None
        updated = current.model_copy(update={_field(step): claimed, "phase": phase, "updated_at": now})
        repo.tx_put(t, updated)
        return updated, claimed

    result: tuple[Run, StepState | None] = ctx.store.transaction(tx)
    if result[1] is not None:
        log.info("%s step claimed", step, extra=fields(attempt=result[1].attempts, kind=kind.name))
    return result


def _look_again(message: Message, run: Run, step: StepState | None, ctx: Context) -> None:
    """Another delivery holds the step: send this message again for when its lease ends.

    Not dropped: if the holder died, no other message would bring the step back.
    """
    delay = core.wait_s(step, ctx.now()) + LEASE_GRACE_S
    log.info("step held by another delivery; looking again later", extra=fields(delay_s=round(delay, 1)))
    ctx.send(message, delay_s=delay, priority=run.priority)


def _call(kind: Kind, step: StepName, fn: Callable[[], Any]) -> Any:
    """The step's outcome, or the error that ended it (classified, never raised)."""
    try:
        return fn()
    except SluiceError as err:
        return err
    except (ConnectionError, TimeoutError) as exc:
        return RetryableError(f"{type(exc).__name__} in the {kind.name} {step}: {exc}", kind=ErrorKind.NETWORK)
    except Exception as exc:
        log.exception("%s step crashed", step)
        return PermanentError(
            f"the {kind.name} kind's {step} failed: {type(exc).__name__}: {exc}",
            kind=ErrorKind.INTERNAL,
            code="step_crashed",
            hint="Retry the run after a fix.",
        )


def _step_failed(run: Run, kind: Kind, step: StepName, attempt: int, err: SluiceError, ctx: Context) -> None:
    """A retryable error is retried by the policy (the step released, a delayed message); else the run fails."""
    if isinstance(err, RetryableError):
        decision = ctx.retry_policy.decide(err.kind, attempt, server_delay_s=err.retry_after)
        if decision.retry:
            log.warning("%s step failed, will retry", step, extra=fields(error=str(err), delay_s=decision.delay_s))
            if _release(run.id, step, attempt, err, ctx):
                message = kind.start(run) if step == "plan" else kind.finish_of(run)
                ctx.send(message, delay_s=decision.delay_s, priority=run.priority)
            return
        log.error("%s step failed for good", step, extra=fields(reason=decision.reason, attempt=attempt))
    log.error("%s step failed", step, extra=fields(error=str(err), code=err.code, attempt=attempt))
    fail_run(run.id, err, ctx)


def _release(run_id: str, step: StepName, attempt: int, err: SluiceError, ctx: Context) -> bool:
    now = ctx.now()

    def tx(t: Transaction) -> bool:
        current = repo.tx_require(t, Run, run_id)
        state = getattr(current, _field(step))
        released = None if state is None else core.release(state, attempt=attempt, error=err.to_record())
        if released is None:
            return False  # taken over meanwhile: the new holder goes on
        repo.tx_put(t, current.model_copy(update={_field(step): released, "updated_at": now}))
        return True

    released: bool = ctx.store.transaction(tx)
    return released


def fail_run(run_id: str, err: SluiceError, ctx: Context) -> None:
    """Fail a run still pending or running, with ``err`` recorded on it and on its operation."""
    now = ctx.now()
    run, _ = repo.require(ctx.store, Run, run_id)
    # A failed run's counters are read as final: count its items (all terminal when a finish fails).
    counters = tally.count_tasks(ctx.store, run) if run.counters.total else run.counters

    def tx(t: Transaction) -> tuple[Run, bool]:
        current = repo.tx_require(t, Run, run_id)
        if current.status not in (RunStatus.PENDING, RunStatus.RUNNING):
            return current, False
        failed = lifecycle.fail_run(current.model_copy(update={"counters": counters}), error=err, now=now)
        repo.tx_put(t, failed)
        return failed, True

    failed, moved = ctx.store.transaction(tx)
    if not moved:
        return
    lifecycle_events.run_ended(failed)
    progress.report_run(
        ctx, failed, stage="failed", status=OperationStatus.FAILED, message=err.message, error=err.to_record()
    )
