"""The extract stage: the run initializer (fan-out), task extraction, and fan-in.

Idempotency under redelivery:

* ``run.start`` creates tasks with derived ids (create-if-absent) and moves the
  run pending -> running with compare-and-set; a redelivery re-sends only the
  tasks still pending.
* ``task.extract`` claims the task (see :func:`common.core.lifecycle.claim_decision`);
  its outcome is written on the task's own record only while its attempt
  number still holds the task (a fencing token); then the fan-in
  (:mod:`common.service.fanin`) completes the run if no task is left open, with
  a compare-and-set on the run, so exactly one task completes it.
* Follow-up messages (export requests) are derived from stored state and
  re-sent when a redelivered message finds the work already done.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable

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
from common.core.messages import ExtractTask, StartRun
from common.core.models import (
    ExtractionTask,
    FileType,
    Job,
    Run,
    SourceFile,
    TaskResult,
    TaskUsage,
)
from common.core.schema import DocumentExtraction
from common.core.states import (
    TERMINAL_TASK_STATES,
    FileStatus,
    OperationStatus,
    RunStatus,
    TaskStatus,
)
from common.obs import metrics
from common.obs.logging import failure_point, fields, log_context
from common.ports.extractor import DocumentRef
from common.ports.store import Filter, Transaction
from common.service import control, fanin, ids, lifecycle_events, progress, repo
from common.service.context import Context

log = logging.getLogger(__name__)


# -- run initializer ------------------------------------------------------------


def fan_out_run(msg: StartRun, ctx: Context) -> None:
    """``run.start``: record one extraction task per file and send them (a redelivery re-sends)."""
    run, _ = repo.require(ctx.store, Run, msg.run_id)
    if run.status in (RunStatus.CANCELLED, RunStatus.FAILED, RunStatus.COMPLETED):
        log.info("run already %s; nothing to start", run.status.value)
        return
    if run.status is RunStatus.PENDING:
        run = _fan_out(run, ctx)
        if run.status is RunStatus.FAILED:
            return
    if run.status is RunStatus.PAUSED:
        log.info("run is paused; tasks are sent when it resumes")
        return
    sent = 0
    for task in repo.scan(
        ctx.store,
        ExtractionTask,
        filters=[
            Filter("run_id", "==", run.id),
            Filter("status", "==", TaskStatus.PENDING.value),
        ],
    ):
        ctx.send(
            ExtractTask(task_id=task.id, run_id=run.id, job_id=run.job_id),
            priority=run.priority,
        )
        sent += 1
    log.info("run started", extra=fields(tasks=run.counters.total, sent=sent))
    progress.report_run(ctx, run, stage="extracting")
    if sent == 0:
        # No tasks at all, or (a run resumed after a pause) the last ones
        # finished while it was paused: complete it now if none is open.
        fanin.settle_run(ctx, run.id)


def _fan_out(run: Run, ctx: Context) -> Run:
    now = ctx.now()
    job, _ = repo.require(ctx.store, Job, run.job_id)
    files = list(
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
    if not files:
        err = PermanentError(
            f"job {job.id} has no uploaded files to extract",
            hint="Upload or import files, then start a run.",
        )

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
    created = 0
    for f in files:
        task = ExtractionTask(
            id=ids.task_id(run.id, f.id),
            owner=run.owner,
            run_id=run.id,
            job_id=job.id,
            file_id=f.id,
            file_name=f.name,
            duplicate_names=list(f.duplicate_names),
            priority=run.priority,
            created_at=now,
            updated_at=now,
        )
        created += repo.create_if_absent(ctx.store, task)
    lifecycle_events.tasks_created(created)
    total = ctx.store.count(ExtractionTask.collection, filters=[Filter("run_id", "==", run.id)])

    def begin(t: Transaction) -> tuple[Run, bool]:
        current = repo.tx_require(t, Run, run.id)
        if current.status is not RunStatus.PENDING:
            return current, False
        started = lifecycle.begin_run(current, total=total, now=now)
        repo.tx_put(t, started)
        return started, True

    started, moved = ctx.store.transaction(begin)
    if moved:
        lifecycle_events.run_started()
    return started


# -- extraction -------------------------------------------------------------------


def extract_task(msg: ExtractTask, ctx: Context) -> None:
    found = repo.get(ctx.store, ExtractionTask, msg.task_id)
    if found is None:
        raise PermanentError(f"task {msg.task_id} does not exist", code="unknown_task")
    task, version = found
    run, _ = repo.require(ctx.store, Run, task.run_id)
    with log_context(file_id=task.file_id):
        _extract(task, version, run, ctx)


def _extract(task: ExtractionTask, version: str, run: Run, ctx: Context) -> None:
    now = ctx.now()
    claim = lifecycle.claim_decision(task, message_id=ctx.message_id, now=now)
    if claim is Claim.DONE:
        # The process may have died between the task's commit and the fan-in.
        fanin.settle_run(ctx, run.id, resend=True)
        return
    if claim is Claim.IN_FLIGHT:
        log.info("duplicate delivery while another attempt holds the task; dropping it")
        return
    if run.status is RunStatus.CANCELLED:
        _settle(task, ctx, lambda t: lifecycle.cancel_task(t, now=ctx.now()))
        return
    if run.status is RunStatus.PAUSED:
        log.info("run is paused; the task waits for resume")
        return
    if claim is Claim.START and (delay := control.throttle_delay(ctx, task)) is not None:
        # The owner is at the cap of running tasks: try again shortly, the
        # task still pending (no attempt is counted).
        log.info("owner at the running-task cap; task throttled", extra=fields(kind="throttled", delay_s=delay))
        ctx.send(ExtractTask(task_id=task.id, run_id=run.id, job_id=run.job_id), delay_s=delay, priority=run.priority)
        return

    found_job = repo.get(ctx.store, Job, task.job_id)
    job = None if found_job is None else run.frozen(found_job[0])  # the schema the run started with
    extractor_name = ((job.settings.extractor if job else None) or ctx.settings.extractor).value
    if claim is Claim.START and (wait := _circuit_wait(ctx, extractor_name)) is not None:
        # The model's circuit is open: wait for it without starting (or counting) an attempt.
        log.info("model circuit open; task waits", extra=fields(kind="circuit_open", delay_s=round(wait, 1)))
        ctx.send(ExtractTask(task_id=task.id, run_id=run.id, job_id=run.job_id), delay_s=wait, priority=run.priority)
        return

    started = lifecycle.start_attempt(task, message_id=ctx.message_id, now=now, lease_s=ctx.settings.task_lease_s)
    repo.cas(ctx.store, started, version)  # loses cleanly (PreconditionFailed) to a racing claim
    lifecycle_events.task_started(started, takeover=claim is Claim.TAKEOVER)
    attempt = started.attempts
    inputs = _inputs(ctx, task, job)
    if isinstance(inputs, PermanentError):
        _fail(started, attempt, inputs, ctx)
        return
    job, file = inputs
    t0 = time.perf_counter()
    outcome = _call_extractor(ctx, job, file, extractor_name)
    latency_ms = round((time.perf_counter() - t0) * 1000, 1)
    lifecycle_events.model_called(ctx.settings, extractor_name, outcome)

    if isinstance(outcome, RetryableError):
        decision = ctx.retry_policy.decide(outcome.kind, attempt, server_delay_s=outcome.retry_after)
        if not decision.retry:
            raw = outcome.raw_output if isinstance(outcome, MalformedModelOutput) else None
            _fail(started, attempt, outcome, ctx, raw_output=raw, note=decision.reason)
            return
        log.warning("extraction failed, will retry", extra=fields(error=str(outcome), delay_s=decision.delay_s))
        err = outcome
        refund = outcome.kind is ErrorKind.THROTTLED
        _settle(
            started,
            ctx,
            lambda t: lifecycle.requeue_task(
                t, attempt=attempt, error=err, now=ctx.now(), delay_s=decision.delay_s, refund_attempt=refund
            ),
        )
        ctx.send(
            ExtractTask(task_id=task.id, run_id=run.id, job_id=run.job_id),
            delay_s=decision.delay_s,
            priority=run.priority,
        )
        return
    if isinstance(outcome, SluiceError):
        _fail(started, attempt, outcome, ctx)
        return

    extraction = outcome
    result = TaskResult(
        columns=extraction.columns,
        results=extraction.results,
        row_pages=extraction.row_pages,
        fields=extraction.fields,
        method=extraction.method,
        pages=extraction.pages,
        notes=extraction.notes,
    )
    metrics.record_tokens(
        extraction.model or extractor_name,
        input_tokens=extraction.input_tokens,
        output_tokens=extraction.output_tokens,
    )
    usage = TaskUsage(
        input_tokens=extraction.input_tokens,
        output_tokens=extraction.output_tokens,
        latency_ms=extraction.latency_ms if extraction.latency_ms is not None else latency_ms,
    )
    _settle(
        started,
        ctx,
        lambda t: lifecycle.complete_task(
            t,
            attempt=attempt,
            result=result,
            usage=usage,
            model=extraction.model or extractor_name,
            model_version=extraction.model_version,
            prompt_version=extraction.prompt_version,
            now=ctx.now(),
        ),
    )
    log.info("task completed", extra=fields(method=extraction.method, rows=len(extraction.results)))


def _circuit_wait(ctx: Context, extractor_name: str) -> float | None:
    """Seconds to wait while the extractor's dependency has its circuit open (None: go)."""
    try:
        dependency = getattr(ctx.deps.extractor(extractor_name), "dependency", None)
    except SluiceError:
        return None  # the extraction itself reports a broken configuration
    if not isinstance(dependency, str):
        return None
    wait = ctx.deps.breaker(dependency).wait_s()
    return wait + random.uniform(0.0, min(5.0, wait * 0.1)) if wait > 0 else None


def _inputs(ctx: Context, task: ExtractionTask, job: Job | None) -> tuple[Job, SourceFile] | PermanentError:
    """The task's job and file; a deleted one fails this task (the message is about a real task)."""
    if job is None:
        return PermanentError(f"job {task.job_id} of this task no longer exists", code="job_missing")
    file = repo.get(ctx.store, SourceFile, task.file_id)
    if file is None:
        return PermanentError(
            f"file {task.file_id} ({task.file_name}) no longer exists",
            code="file_missing",
            hint="The file was deleted after the run started; upload it again and start a new run.",
        )
    return job, file[0]


def _call_extractor(ctx: Context, job: Job, file: SourceFile, extractor_name: str) -> DocumentExtraction | SluiceError:
    """The extraction, or the error that ended it (classified, never raised)."""
    if file.blob_uri is None:
        return PermanentError(f"file {file.name} has no stored content", code="file_missing")
    try:
        extractor = ctx.deps.extractor(extractor_name)
        doc = DocumentRef(uri=file.blob_uri, name=file.name, mime_type=file.mime_type, size=file.size)
        return extractor.extract(doc, job.fields, prompt=job.prompt)
    except SluiceError as err:
        # Storage and model failures arrive classified (BlobUnavailable, a 429...):
        # transient ones reach the retry policy.
        return err
    except (ConnectionError, TimeoutError) as exc:
        return RetryableError(f"{type(exc).__name__} while extracting {file.name}: {exc}", kind=ErrorKind.NETWORK)
    except Exception as exc:
        # Third-party parsing code failing on one document must fail that
        # document's task (with the reason kept), not loop its message.
        log.exception("extractor crashed")
        return PermanentError(
            f"the {extractor_name} extractor failed on {file.name}: {type(exc).__name__}: {exc}",
            kind=ErrorKind.INTERNAL,
            code="extractor_crashed",
            hint="Report this with the document if you can share it; retry the task after a fix.",
        )


def _fail(
    task: ExtractionTask,
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
    task: ExtractionTask,
    ctx: Context,
    change: Callable[[ExtractionTask], ExtractionTask],
) -> None:
    """Apply ``change`` to the task as stored now (compare-and-set on the task's
    own record, fenced by its attempt); if that ends the task, run the fan-in.

    The run document is not written here: 64 tasks finishing together would
    all contend for it, and a conflict must never cost a repeated model call.
    """

    def tx(t: Transaction) -> ExtractionTask | None:
        current = repo.tx_require(t, ExtractionTask, task.id)
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
