"""The platform's run machinery, for every job kind: the run initializer
(fan-out), one attempt at one work item, and fan-in.

A kind (:mod:`common.kinds`) declares its fan-out, item handler and fan-in;
everything here is the same for all kinds. Idempotency under redelivery:

* ``run.start`` (or the kind's start message) creates work items with derived
  ids (create-if-absent) and moves the run pending -> running with
  compare-and-set; a redelivery re-sends only the items still waiting.
* An item message claims the item (see :func:`common.core.lifecycle.claim_decision`);
  its outcome is written on the item's own record only while its attempt
  number still holds the item (a fencing token); then the fan-in
  (:mod:`common.service.fanin`) completes the run if no item is left open, with
  a compare-and-set on the run, so exactly one item completes it.
* An owner at the running-item limit has its item ``queued`` (no attempt
  counted) and its message sent again after a short delay.
* An attempt holds its item for the kind's lease; if that is shorter than the
  subscription's ack deadline (after which the bus redelivers anyway), a check
  is scheduled for the lease's end at claim time (:mod:`common.service.watchdog`),
  so a stalled item is dispatched again within one lease.
* Follow-up messages (export requests) are derived from stored state and
  re-sent when a redelivered message finds the work already done.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from common import kinds
from common.core import lifecycle
from common.core.errors import (
    ErrorKind,
    IllegalTransition,
    MalformedModelOutput,
    PermanentError,
    RetryableError,
    SluiceError,
)
from common.core.lifecycle import Claim
from common.core.messages import ExtractTask, ItemLeaseCheck, RunDeadline, StartRun
from common.core.models import (
    FileType,
    Job,
    Run,
    SourceFile,
    WorkItem,
)
from common.core.states import (
    TERMINAL_TASK_STATES,
    FileStatus,
    OperationStatus,
    RunStatus,
    TaskStatus,
)
from common.kinds import ItemCall, ItemDone, Kind
from common.obs.logging import failure_point, fields, log_context
from common.ports.store import Filter, Transaction
from common.service import control, fanin, ids, lifecycle_events, progress, repo, steps
from common.service.context import Context

log = logging.getLogger(__name__)

# A lease check arrives this long after the lease ends (clocks differ a little).
LEASE_GRACE_S = 2.0
_WAITING = [TaskStatus.PENDING.value, TaskStatus.QUEUED.value]


def stage_of(kind: Kind) -> str:
    """The operation's stage while a run's items are being worked on."""
    return "extracting" if kind.name == "extract" else "running"


def run_timeout_s(ctx: Context, kind: Kind) -> float | None:
    """The kind's run timeout (SLUICE_RUN_TIMEOUTS overrides the kind's own; None or 0: none)."""
    value = ctx.settings.run_timeouts.get(kind.name, kind.run_timeout_s)
    return value if value else None


def item_lease_s(ctx: Context, kind: Kind) -> float:
    return kind.item_lease_s or ctx.settings.task_lease_s


# -- run initializer ------------------------------------------------------------


def fan_out_run(msg: StartRun, ctx: Context) -> None:
    """A run's start message: record its kind's work items and send them (a redelivery re-sends)."""
    run, _ = repo.require(ctx.store, Run, msg.run_id)
    if run.status in (RunStatus.CANCELLED, RunStatus.FAILED, RunStatus.COMPLETED):
        log.info("run already %s; nothing to start", run.status.value)
        return
    kind = kinds.get(run.kind)
    if run.status is RunStatus.PENDING:
        run = _fan_out(run, kind, ctx)
        if run.status in (RunStatus.FAILED, RunStatus.PENDING, RunStatus.CANCELLED):
            return  # failed, cancelled, or its kind's plan is not made yet (retried or being made elsewhere)
    _watch_deadline(run, ctx)
    if run.status is RunStatus.PAUSED:
        log.info("run is paused; tasks are sent when it resumes")
        return
    sent = 0
    for task in repo.scan(
        ctx.store, WorkItem, filters=[Filter("run_id", "==", run.id), Filter("status", "in", _WAITING)]
    ):
        ctx.send(kind.item(task), priority=run.priority)
        sent += 1
    log.info("run started", extra=fields(tasks=run.counters.total, sent=sent, kind=kind.name))
    progress.report_run(ctx, run, stage=stage_of(kind))
    if sent == 0:
        # No tasks at all, or (a run resumed after a pause) the last ones
        # finished while it was paused: complete it now if none is open
        # (or send its kind's finish again: one that came while it was paused did nothing).
        fanin.settle_run(ctx, run.id, resend=True)


def _watch_deadline(run: Run, ctx: Context) -> None:
    """Have the run's deadline checked when it comes (again on every start: a lost send is re-made)."""
    if run.deadline_at is None:
        return
    delay = max(0.0, (run.deadline_at - ctx.now()).total_seconds())
    ctx.send(RunDeadline(run_id=run.id, job_id=run.job_id), delay_s=delay or None)


def _fail_start(run: Run, err: PermanentError, ctx: Context) -> Run:
    now = ctx.now()

    def fail(t: Transaction) -> tuple[Run, bool]:
        current = repo.tx_require(t, Run, run.id)
        if current.status is not RunStatus.PENDING:
            return current, False
        failed = lifecycle.fail_run(current, error=err, now=now)
        repo.tx_put(t, failed)
        return failed, True

    failed_run, moved = ctx.store.transaction(fail)
    if moved:
        lifecycle_events.run_ended(failed_run)
    progress.report_run(
        ctx,
        failed_run,
        stage="failed",
        status=OperationStatus.FAILED,
        message=err.message,
        error=err.to_record(),
    )
    return failed_run


def _fan_out(run: Run, kind: Kind, ctx: Context) -> Run:
    now = ctx.now()
    job = run.frozen(repo.require(ctx.store, Job, run.job_id)[0])
    files = (
        []
        if not kind.uses_uploads
        else list(
            repo.scan(
                ctx.store,
                SourceFile,
                filters=[
                    Filter("job_id", "==", job.id),
                    Filter("status", "==", FileStatus.UPLOADED.value),
                    # Archives are kept for audit; their members are the documents.
                    Filter("file_type", "==", FileType.DOCUMENT.value),
                ],
            )
        )
    )
    if kind.uses_uploads and not files:
        err = PermanentError(
            f"job {job.id} has no uploaded files to extract",
            hint="Upload or import files, then start a run.",
        )
        return _fail_start(run, err, ctx)
    if kind.plan is not None:
        planned = steps.plan_items(run, kind, job, ctx)
        if planned is None:
            return repo.require(ctx.store, Run, run.id)[0]
        specs = planned
    else:
        try:
            specs = kind.fan_out(job, files, kind.validate_settings(job.kind_settings))
        except PermanentError as err:
            return _fail_start(run, err, ctx)
    if not specs:
        return _fail_start(
            run, PermanentError(f"the {kind.name} kind made no work items of job {job.id}'s inputs"), ctx
        )
    items = [
        WorkItem(
            id=ids.task_id(run.id, spec.key),
            owner=run.owner,
            run_id=run.id,
            job_id=job.id,
            kind=kind.name,
            file_id=spec.key,
            file_name=spec.name,
            params=dict(spec.params),
            duplicate_names=list(spec.duplicate_names),
            priority=run.priority,
            created_at=now,
            updated_at=now,
        )
        for spec in specs
    ]
    lifecycle_events.tasks_created(repo.create_all_if_absent(ctx.store, items))
    total = ctx.store.count(WorkItem.collection, filters=[Filter("run_id", "==", run.id)])
    timeout = run_timeout_s(ctx, kind)

    def begin(t: Transaction) -> tuple[Run, bool]:
        current = repo.tx_require(t, Run, run.id)
        if current.status is not RunStatus.PENDING:
            return current, False
        started = lifecycle.begin_run(current, total=total, now=now, timeout_s=timeout)
        if kind.plan is not None or kind.finish is not None:
            started = started.model_copy(update={"phase": "running"})
        repo.tx_put(t, started)
        return started, True

    started, moved = ctx.store.transaction(begin)
    if moved:
        lifecycle_events.run_started()
    return started


# -- one attempt at one item ---------------------------------------------------------


def run_item(msg: ExtractTask, ctx: Context) -> None:
    found = repo.get(ctx.store, WorkItem, msg.task_id)
    if found is None:
        raise PermanentError(f"task {msg.task_id} does not exist", code="unknown_task")
    task, version = found
    run, _ = repo.require(ctx.store, Run, task.run_id)
    with log_context(file_id=task.file_id):
        _run_item(task, version, run, kinds.get(run.kind), ctx)


# The extract kind's item handler, by its name before kinds.
extract_task = run_item


def _waits(task: WorkItem, version: str, run: Run, kind: Kind, ctx: Context, claim: Claim) -> bool:
    """Whether the item must not start now (the reason handled: sent again later, or left)."""
    if run.status in (RunStatus.CANCELLED, RunStatus.FAILED):
        # Cancelled by its owner, or failed past its deadline: the item never starts.
        _settle(task, ctx, lambda t: lifecycle.cancel_task(t, now=ctx.now()))
        return True
    if run.status is RunStatus.PAUSED:
        log.info("run is paused; the task waits for resume")
        return True
    if claim is Claim.START and (delay := _throttle(ctx, task, kind)) is not None:
        # The owner is at the cap of running items: the item is queued (no
        # attempt is counted) and tried again shortly.
        log.info("owner at the running-task cap; task throttled", extra=fields(kind="throttled", delay_s=delay))
        if task.status is not TaskStatus.QUEUED:
            repo.cas(ctx.store, lifecycle.queue_task(task, now=ctx.now(), delay_s=delay), version)
        ctx.send(kind.item(task), delay_s=delay, priority=run.priority)
        return True
    return False


def _throttle(ctx: Context, task: WorkItem, kind: Kind) -> float | None:
    """The wait imposed by the owner's cap on running items, or by the kind's cap on working runs."""
    delay = control.throttle_delay(ctx, task)
    if delay is None and kind.runs_per_user is not None:
        delay = control.runs_cap_delay(ctx, task, kind.runs_per_user(ctx.settings))
    return delay


def _run_item(task: WorkItem, version: str, run: Run, kind: Kind, ctx: Context) -> None:
    now = ctx.now()
    claim = lifecycle.claim_decision(task, message_id=ctx.message_id, now=now)
    if claim is Claim.DONE:
        # The process may have died between the task's commit and the fan-in.
        fanin.settle_run(ctx, run.id, resend=True)
        return
    if claim is Claim.IN_FLIGHT:
        log.info("duplicate delivery while another attempt holds the task; dropping it")
        return
    if _waits(task, version, run, kind, ctx, claim):
        return
    found_job = repo.get(ctx.store, Job, task.job_id)
    job = None if found_job is None else run.frozen(found_job[0])  # the job as the run started it
    if claim is Claim.START and job is not None and (wait := _circuit_wait(ctx, kind, job)) is not None:
        # The model's circuit is open: wait for it without starting (or counting) an attempt.
        log.info("model circuit open; task waits", extra=fields(kind="circuit_open", delay_s=round(wait, 1)))
        ctx.send(kind.item(task), delay_s=wait, priority=run.priority)
        return
    if claim is Claim.START and job is not None and kind.pacing is not None and (turn := kind.pacing(ctx, job)):
        # The quota is booked further ahead than a caller may wait: come back at this item's
        # turn, having written nothing (claiming and requeueing would each cost a write).
        log.info("model quota booked ahead; task waits its turn", extra=fields(kind="paced", delay_s=round(turn, 1)))
        ctx.send(kind.item(task), delay_s=turn, priority=run.priority)
        return
    lease = item_lease_s(ctx, kind)
    started = lifecycle.start_attempt(task, message_id=ctx.message_id, now=now, lease_s=lease)
    repo.cas(ctx.store, started, version)  # loses cleanly (PreconditionFailed) to a racing claim
    lifecycle_events.task_started(started, takeover=claim is Claim.TAKEOVER)
    _watch_lease(started, kind, lease, ctx)
    attempt = started.attempts
    if job is None:
        _fail(
            started,
            attempt,
            PermanentError(f"job {task.job_id} of this task no longer exists", code="job_missing"),
            ctx,
        )
        return
    outcome = _handle(kind, started, job, run, attempt, ctx)
    if isinstance(outcome, RetryableError):
        _retry_or_fail(started, attempt, outcome, run, kind, ctx)
    elif isinstance(outcome, SluiceError):
        _fail(started, attempt, outcome, ctx)
    else:
        _complete(started, attempt, outcome, ctx)


def _handle(kind: Kind, task: WorkItem, job: Job, run: Run, attempt: int, ctx: Context) -> ItemDone | SluiceError:
    """The kind's handler on one item: its outcome or the error that ended it (never raised)."""
    try:
        settings = kind.validate_settings(job.kind_settings)
        call = ItemCall(
            ctx=ctx,
            item=task,
            job=job,
            run=run,
            settings=settings,
            attempt=attempt,
            save_checkpoint=lambda data: save_checkpoint(ctx, task.id, attempt, data),
        )
        return kind.handle(call)
    except SluiceError as err:
        return err
    except (ConnectionError, TimeoutError) as exc:
        return RetryableError(f"{type(exc).__name__} in the {kind.name} handler: {exc}", kind=ErrorKind.NETWORK)
    except Exception as exc:
        log.exception("item handler crashed")
        return PermanentError(
            f"the {kind.name} handler failed on {task.file_name}: {type(exc).__name__}: {exc}",
            kind=ErrorKind.INTERNAL,
            code="handler_crashed",
            hint="Retry the item after a fix.",
        )


def save_checkpoint(ctx: Context, task_id: str, attempt: int, data: dict[str, Any]) -> None:
    """Store the item's checkpoint while ``attempt`` still holds it (IllegalTransition otherwise)."""

    def tx(t: Transaction) -> None:
        current = repo.tx_require(t, WorkItem, task_id)
        repo.tx_put(t, lifecycle.checkpoint_task(current, attempt=attempt, checkpoint=data, now=ctx.now()))

    ctx.store.transaction(tx)


def _watch_lease(task: WorkItem, kind: Kind, lease_s: float, ctx: Context) -> None:
    """Check the attempt when its lease ends, unless the bus redelivers by then anyway.

    Pub/Sub (and the local bus) redeliver an unacknowledged message after the
    subscription's ack deadline, and the same message takes the item over. A
    kind whose lease is shorter gets a delayed check instead: one message per
    attempt, only for those kinds.
    """
    topic = ctx.deps.topology.topics.get(ctx.deps.topology.topic_for(kind.item_message))
    ack_deadline = topic.subscription.ack_deadline_s if topic and topic.subscription else 0.0
    if lease_s >= ack_deadline:
        return
    check = ItemLeaseCheck(task_id=task.id, run_id=task.run_id, job_id=task.job_id, attempt=task.attempts)
    # Scheduled now, not sent with the handler's outcome: a stalled handler never reaches its outcome
    # (the local runtime publishes a handler's sends when it settles). Named: once per attempt.
    at = ctx.now() + timedelta(seconds=lease_s + LEASE_GRACE_S)
    ctx.deps.scheduler.schedule(check, at=at, name=f"lease-{task.id}-{task.attempts}", queue=task.priority.value)


def _retry_or_fail(task: WorkItem, attempt: int, err: RetryableError, run: Run, kind: Kind, ctx: Context) -> None:
    decision = ctx.retry_policy.decide(err.kind, attempt, server_delay_s=err.retry_after)
    if not decision.retry:
        raw = err.raw_output if isinstance(err, MalformedModelOutput) else None
        _fail(task, attempt, err, ctx, raw_output=raw, note=decision.reason)
        return
    log.warning("extraction failed, will retry", extra=fields(error=str(err), delay_s=decision.delay_s))
    refund = err.kind is ErrorKind.THROTTLED
    _settle(
        task,
        ctx,
        lambda t: lifecycle.requeue_task(
            t, attempt=attempt, error=err, now=ctx.now(), delay_s=decision.delay_s, refund_attempt=refund
        ),
    )
    ctx.send(kind.item(task), delay_s=decision.delay_s, priority=run.priority)


def _complete(task: WorkItem, attempt: int, done: ItemDone, ctx: Context) -> None:
    settled = _settle(
        task,
        ctx,
        lambda t: lifecycle.complete_task(
            t,
            attempt=attempt,
            result=done.result,
            usage=done.usage,
            model=done.model,
            model_version=done.model_version,
            prompt_version=done.prompt_version,
            now=ctx.now(),
        ),
    )
    if settled:
        log.info("task completed", extra=fields(method=done.result.method, rows=len(done.result.results)))


def _circuit_wait(ctx: Context, kind: Kind, job: Job) -> float | None:
    """Seconds to wait while the kind's dependency has its circuit open (None: go)."""
    dependency = kind.circuit(ctx, job) if kind.circuit is not None else None
    if dependency is None:
        return None
    wait = ctx.deps.breaker(dependency).wait_s()
    return wait + random.uniform(0.0, min(5.0, wait * 0.1)) if wait > 0 else None


def _fail(
    task: WorkItem,
    attempt: int,
    err: SluiceError,
    ctx: Context,
    *,
    raw_output: str | None = None,
    note: str | None = None,
) -> None:
    # The item failed for good: ERROR, with its ids (the log context's labels) and where it failed.
    log.error(
        "task failed",
        extra=fields(error=str(err), code=err.code, reason=note, attempt=attempt, point=failure_point(err, "extract")),
    )
    _settle(
        task,
        ctx,
        lambda t: lifecycle.fail_task(t, attempt=attempt, error=err, now=ctx.now(), raw_output=raw_output),
    )


def _settle(
    task: WorkItem,
    ctx: Context,
    change: Callable[[WorkItem], WorkItem],
) -> bool:
    """Apply ``change`` to the task as stored now (compare-and-set on the task's
    own record, fenced by its attempt); if that ends the task, run the fan-in.
    False if the attempt no longer held the task (nothing was written).

    The run document is not written here: 64 tasks finishing together would
    all contend for it, and a conflict must never cost a repeated model call.
    """

    def tx(t: Transaction) -> WorkItem | None:
        current = repo.tx_require(t, WorkItem, task.id)
        try:
            updated = change(current)
        except IllegalTransition:
            # Another attempt took the task over meanwhile; its outcome stands.
            log.info("stale attempt: the task moved on without it")
            return None
        repo.tx_put(t, updated)
        return updated

    updated = ctx.store.transaction(tx)
    if updated is not None and updated.status in TERMINAL_TASK_STATES:
        lifecycle_events.task_ended(updated.status)
        fanin.settle_run(ctx, updated.run_id)
    return updated is not None
