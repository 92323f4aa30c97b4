"""Jobs: create, list (filtered by the latest run's status), get, update, delete."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from common import kinds
from common.api import schemas as s
from common.api.call import Call, Reply, Result, Route
from common.api.errors import ApiError, not_found
from common.api.routes._shared import E404, E_BODY, E_STATE, busy_as_409, mine, owned, page, route
from common.core.errors import ConfigError, NotFound, PermanentError
from common.core.models import (
    Job,
    format_timestamp,
)
from common.core.schema import preset
from common.ports.store import Filter, Order
from common.service import cost as cost_service
from common.service import deletion, jobs

# How many records a filtered job listing examines per request, at most.
SCAN_BUDGET = 2000


def create_job(call: Call) -> Result:
    body = call.body_as(s.JobCreate)
    kind = kinds.get(body.kind)
    validated = kind.validate_settings(body.settings)
    if kind.prepare is not None:
        validated = _prepared(call, kind, validated)
    kind_settings = validated.model_dump(mode="json")
    if body.fields is not None:
        fields = body.fields
    elif body.preset is None:
        fields = []  # a kind other than extract
    else:
        try:
            fields = list(preset(body.preset or ""))
        except ValueError as exc:
            raise ApiError(422, "unknown_preset", str(exc)) from exc
    specs = None if body.exports is None else [e.spec() for e in body.exports]

    def reply(job: Job) -> Reply:
        return Reply(s.JobOut.of(job), headers={"Location": f"/v1/jobs/{job.id}"})

    job = jobs.create_job(
        call.deps,
        owner=call.owner,
        name=body.name,
        fields=fields,
        prompt=body.prompt,
        exports=specs,
        extractor=body.extractor,
        concurrent_runs=bool(body.concurrent_runs),
        review_below=body.review_below,
        kind=body.kind,
        kind_settings=kind_settings,
        guard=call.guard(reply),
    )
    return reply(job)


def _prepared(call: Call, kind: kinds.Kind, settings: BaseModel) -> BaseModel:
    """The kind's checks before a job exists (its model, its source): 422 with the hint when they fail."""
    assert kind.prepare is not None
    try:
        return kind.prepare(call.deps, call.owner, settings)
    except ConfigError as exc:
        raise ApiError(422, "not_configured", exc.message, details={"hint": exc.hint}) from exc
    except PermanentError as exc:
        raise ApiError(422, exc.code, exc.message, details={"hint": exc.hint}) from exc


def list_jobs(call: Call) -> Result:
    q = call.query_as(s.JobQuery)
    field, direction = (q.sort[1:], "desc") if q.sort.startswith("-") else (q.sort, "asc")
    filters = [mine(call)]
    if q.created_after is not None:
        filters.append(Filter("created_at", ">=", format_timestamp(q.created_after)))
    if q.created_before is not None:
        filters.append(Filter("created_at", "<", format_timestamp(q.created_before)))
    if len(filters) > 1 and field != "created_at":
        raise ApiError(
            422, "invalid_query", "a created_at range can only be combined with sort=created_at or -created_at"
        )
    order = [Order(field, "desc" if direction == "desc" else "asc")]
    limit = min(q.limit, call.settings.max_page_size)
    if q.status is None:
        found, cursor = page(call, Job, filters, order, q)
        return s.JobList(items=[s.JobOut.of(j, jobs.latest_run(call.deps, j.id)) for j in found], next_cursor=cursor)
    # Filter by the latest run's status: examine whole pages so the cursor stays exact;
    # a page may hold fewer items than asked, with a cursor to go on.
    items: list[s.JobOut] = []
    cursor = q.cursor
    examined = 0
    while len(items) < limit and examined < SCAN_BUDGET:
        sub = s.PageQuery(limit=limit - len(items), cursor=cursor)
        found, cursor = page(call, Job, filters, order, sub)
        examined += len(found)
        for job in found:
            latest = jobs.latest_run(call.deps, job.id)
            status = "idle" if latest is None else latest.status.value
            if status == q.status:
                items.append(s.JobOut.of(job, latest))
        if cursor is None:
            break
    return s.JobList(items=items, next_cursor=cursor)


def get_job(call: Call) -> Result:
    job = owned(call, Job, call.params["job_id"])
    return s.JobOut.of(job, jobs.latest_run(call.deps, job.id))


def update_job(call: Call) -> Result:
    body = call.body_as(s.JobUpdate)
    job_id = call.params["job_id"]
    owned(call, Job, job_id)
    changes = {name: getattr(body, name) for name in ("name", "fields", "prompt") if getattr(body, name) is not None}
    settings: dict[str, Any] = {}
    if body.exports is not None:
        settings["exports"] = [e.spec() for e in body.exports]
    if "extractor" in body.model_fields_set:
        settings["extractor"] = body.extractor
    if body.concurrent_runs is not None:
        settings["concurrent_runs"] = body.concurrent_runs
    if "review_below" in body.model_fields_set:
        settings["review_below"] = body.review_below
    try:
        job = jobs.update_job(call.deps, job_id, owners=call.owners, changes=changes, settings_changes=settings)
    except NotFound:
        raise not_found("job", job_id) from None
    return s.JobOut.of(job, jobs.latest_run(call.deps, job.id))


def delete_job(call: Call) -> Result:
    """Delete a job with its files (and their blobs), runs, tasks (results), exports and operations."""
    job = owned(call, Job, call.params["job_id"])
    with busy_as_409():
        if job.kind == "ingest":
            collection = job.kind_settings.get("collection_id")
            raise deletion.JobBusy(
                f"job {job.id} is the ingest job of collection {collection}",
                hint=f"Delete the collection instead (DELETE /v1/collections/{collection}).",
            )
        deletion.delete_job(call.deps, job, owners=call.owners)
    return Reply(status=204)


def estimate_run(call: Call) -> Result:
    job = owned(call, Job, call.params["job_id"])
    try:
        estimate = cost_service.estimate_run(call.deps, job)
    except cost_service.PriceMissing as err:
        raise ApiError(422, err.code, err.message, details={"hint": err.hint}) from err
    check = cost_service.budget_check(call.deps, [job.owner], estimate)
    budget = s.BudgetCheckOut(
        limit=check.limit, spent=check.spent, remaining=check.remaining, allowed=check.allowed, currency=check.currency
    )
    return s.EstimateOut(**estimate.model_dump(), budget=budget)


ROUTES: list[Route] = [
    route(
        "POST",
        "/v1/jobs",
        create_job,
        "Create a job",
        "jobs",
        body=s.JobCreate,
        response=s.JobOut,
        status=201,
        errors=(401, 422),
    ),
    route(
        "GET", "/v1/jobs", list_jobs, "List jobs", "jobs", query=s.JobQuery, response=s.JobList, errors=(400, 401, 422)
    ),
    route("GET", "/v1/jobs/{job_id}", get_job, "Get a job", "jobs", response=s.JobOut, errors=E404),
    route(
        "POST",
        "/v1/jobs/{job_id}/estimate",
        estimate_run,
        "Estimate a run's items, tokens and cost before starting it",
        "jobs",
        response=s.EstimateOut,
        errors=(*E404, 422),
    ),
    route(
        "PATCH",
        "/v1/jobs/{job_id}",
        update_job,
        "Update a job",
        "jobs",
        body=s.JobUpdate,
        response=s.JobOut,
        errors=E_BODY,
    ),
    route(
        "DELETE",
        "/v1/jobs/{job_id}",
        delete_job,
        "Delete a job, its files, results and exports",
        "jobs",
        status=204,
        errors=E_STATE,
    ),
]
