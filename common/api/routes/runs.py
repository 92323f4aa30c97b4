"""Runs and their work items: start, list, get, cancel, pause, resume, retry; tasks."""

from __future__ import annotations

from datetime import timedelta

from common.api import schemas as s
from common.api.call import Call, Reply, Result, Route
from common.api.errors import ApiError
from common.api.routes._shared import E404, E_BODY, E_STATE, mine, owned, page, route
from common.core.models import (
    ExtractionTask,
    Job,
    Run,
    format_timestamp,
)
from common.ports.store import Filter, Order
from common.service import control, jobs, tally
from common.service import cost as cost_service
from common.service.exports import signed_url_ttl


def start_run(call: Call) -> Result:
    job = owned(call, Job, call.params["job_id"])
    body = call.body_as(s.RunCreate)
    now = call.deps.clock.now()
    if body.schedule_time is not None:
        if body.schedule_time <= now:
            raise ApiError(
                422,
                "invalid_schedule_time",
                "schedule_time must be in the future",
                details={"now": format_timestamp(now), "schedule_time": format_timestamp(body.schedule_time)},
            )
        horizon = now + timedelta(days=call.settings.max_schedule_days)
        if body.schedule_time > horizon:
            raise ApiError(
                422,
                "invalid_schedule_time",
                f"schedule_time may be at most {call.settings.max_schedule_days} days ahead",
                details={"latest": format_timestamp(horizon)},
            )

    def reply(run: Run) -> Reply:
        return Reply(_run_out(call, run), status=202, headers={"Location": f"/v1/operations/{run.operation_id}"})

    try:
        run = jobs.request_run(
            call.deps,
            call.sender,
            job,
            priority=body.priority,
            schedule_time=body.schedule_time,
            guard=call.guard(reply),
        )
    except cost_service.PriceMissing as err:
        raise ApiError(422, err.code, err.message, details={"hint": err.hint}) from err
    except cost_service.BudgetExceeded as err:
        check = err.check
        raise ApiError(
            402,
            "budget_exceeded",
            err.message,
            details={
                "estimate": err.estimate.cost,
                "limit": check.limit,
                "spent": check.spent,
                "remaining": max(check.remaining or 0.0, 0.0),
                "currency": check.currency,
                "hint": err.hint,
            },
        ) from err
    except jobs.RunActive as err:
        active = err.run
        raise ApiError(
            409,
            "run_active",
            err.message,
            details={
                "active_run_id": active.id,
                "active_run_status": active.status.value,
                "operation_id": active.operation_id,
                "hint": err.hint,
            },
            headers={"Location": f"/v1/runs/{active.id}"},
        ) from err
    return reply(run)


def list_job_runs(call: Call) -> Result:
    job = owned(call, Job, call.params["job_id"])
    q = call.query_as(s.PageQuery)
    found, cursor = page(call, Run, [Filter("job_id", "==", job.id)], [Order("run_number", "desc")], q)
    return s.RunList(items=[_run_out(call, r) for r in found], next_cursor=cursor)


def list_runs(call: Call) -> Result:
    q = call.query_as(s.RunQuery)
    filters = [mine(call)]
    if q.status is not None:
        filters.append(Filter("status", "==", q.status.value))
    if q.job_id is not None:
        filters.append(Filter("job_id", "==", q.job_id))
    found, cursor = page(call, Run, filters, [Order("created_at", "desc")], q)
    return s.RunList(items=[_run_out(call, r) for r in found], next_cursor=cursor)


def _run_out(call: Call, run: Run) -> s.RunOut:
    """A run as clients see it: exact counters, counted from its tasks while it runs."""
    return s.RunOut.of(tally.with_live_counters(call.deps.store, run))


def get_run(call: Call) -> Result:
    return _run_out(call, owned(call, Run, call.params["run_id"]))


def list_run_files(call: Call) -> Result:
    """The files a run's kind made (``outputs.files``), each with a fresh signed link."""
    run = owned(call, Run, call.params["run_id"])
    ttl = signed_url_ttl(call.deps.settings.signed_url_ttl_s)
    expires = call.deps.clock.now() + ttl
    files = (run.outputs or {}).get("files") or []
    return s.RunFileList(
        items=[
            s.RunFileOut(
                name=str(f["name"]),
                content_type=f.get("content_type"),
                bytes=f.get("bytes"),
                url=call.deps.blobs.signed_url(str(f["uri"]), expires=ttl),
                url_expires_at=expires,
            )
            for f in files
            if isinstance(f, dict) and f.get("uri")
        ]
    )


def cancel_run(call: Call) -> Result:
    run = owned(call, Run, call.params["run_id"])
    return _run_out(call, control.cancel_run(call.deps, run.id, owner=run.owner))


def pause_run(call: Call) -> Result:
    run = owned(call, Run, call.params["run_id"])
    return _run_out(call, control.pause_run(call.deps, run.id, owner=run.owner))


def resume_run(call: Call) -> Result:
    run = owned(call, Run, call.params["run_id"])
    return _run_out(call, control.resume_run(call.deps, call.sender, run.id, owner=run.owner))


def retry_run(call: Call) -> Result:
    run = owned(call, Run, call.params["run_id"])
    body = call.body_as(s.RetryRequest)
    updated, n = control.retry_run(
        call.deps, call.sender, run.id, owner=run.owner, scope=body.scope, task_ids=body.task_ids
    )
    return Reply(s.RetryOut(run=_run_out(call, updated), retried=n), status=202)


def list_tasks(call: Call) -> Result:
    return _items(call)


def list_items(call: Call) -> Result:
    return _items(call)


def _items(call: Call) -> s.TaskList:
    run = owned(call, Run, call.params["run_id"])
    q = call.query_as(s.TaskQuery)
    filters = [Filter("run_id", "==", run.id)]
    if q.status is not None:
        filters.append(Filter("status", "==", q.status.value))
    found, cursor = page(call, ExtractionTask, filters, [], q)
    return s.TaskList(items=[s.TaskOut.of(t) for t in found], next_cursor=cursor)


def get_task(call: Call) -> Result:
    return s.TaskOut.of(owned(call, ExtractionTask, call.params["task_id"]))


def get_item(call: Call) -> Result:
    return s.TaskOut.of(owned(call, ExtractionTask, call.params["item_id"], what="item"))


ROUTES: list[Route] = [
    route(
        "POST",
        "/v1/jobs/{job_id}/runs",
        start_run,
        "Start a run now or at schedule_time",
        "runs",
        body=s.RunCreate,
        response=s.RunOut,
        status=202,
        errors=(*E_BODY, 402),
    ),
    route(
        "GET",
        "/v1/jobs/{job_id}/runs",
        list_job_runs,
        "List a job's runs",
        "runs",
        query=s.PageQuery,
        response=s.RunList,
        errors=E404,
    ),
    route(
        "GET", "/v1/runs", list_runs, "List runs", "runs", query=s.RunQuery, response=s.RunList, errors=(400, 401, 422)
    ),
    route("GET", "/v1/runs/{run_id}", get_run, "Get a run with its counters", "runs", response=s.RunOut, errors=E404),
    route(
        "GET",
        "/v1/runs/{run_id}/files",
        list_run_files,
        "List the files a run made (a research report), with signed download links",
        "runs",
        response=s.RunFileList,
        errors=E404,
    ),
    route("POST", "/v1/runs/{run_id}/cancel", cancel_run, "Cancel a run", "runs", response=s.RunOut, errors=E_STATE),
    route(
        "POST", "/v1/runs/{run_id}/pause", pause_run, "Pause a running run", "runs", response=s.RunOut, errors=E_STATE
    ),
    route(
        "POST", "/v1/runs/{run_id}/resume", resume_run, "Resume a paused run", "runs", response=s.RunOut, errors=E_STATE
    ),
    route(
        "POST",
        "/v1/runs/{run_id}/retry",
        retry_run,
        "Retry a finished run's failed (or all) tasks",
        "runs",
        body=s.RetryRequest,
        response=s.RetryOut,
        status=202,
        errors=(401, 404, 409, 422),
    ),
    route(
        "GET",
        "/v1/runs/{run_id}/tasks",
        list_tasks,
        "List a run's tasks",
        "runs",
        query=s.TaskQuery,
        response=s.TaskList,
        errors=E404,
    ),
    route(
        "GET",
        "/v1/runs/{run_id}/items",
        list_items,
        "List a run's work items",
        "runs",
        query=s.TaskQuery,
        response=s.TaskList,
        errors=E404,
        description="The generic name of a run's tasks, for every job kind: one record per work item "
        "(for the extract kind, one per document) with its status, attempts and retry history.",
    ),
    route(
        "GET",
        "/v1/items/{item_id}",
        get_item,
        "Get a work item with its attempts",
        "runs",
        response=s.TaskOut,
        errors=E404,
        description="The generic name of GET /v1/tasks/{task_id}, for every job kind.",
    ),
    route(
        "GET",
        "/v1/tasks/{task_id}",
        get_task,
        "Get a task with its attempts (start, end, outcome, error, delay chosen)",
        "runs",
        response=s.TaskOut,
        errors=E404,
    ),
]
