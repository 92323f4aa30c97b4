"""Jobs: create, list (filtered by the latest run's status), get, update, delete."""

from __future__ import annotations

from typing import Any

from common.api import schemas as s
from common.api.call import Call, Reply, Result, Route
from common.api.errors import ApiError, not_found
from common.api.routes._shared import E404, E_BODY, E_STATE, active_runs, mine, owned, page, route
from common.core.models import (
    Automation,
    Export,
    ExtractionTask,
    Job,
    JobSettings,
    Operation,
    Run,
    SourceFile,
    format_timestamp,
)
from common.core.schema import preset
from common.ports.store import Filter, Order, Transaction
from common.service import jobs, repo

# How many records a filtered job listing examines per request, at most.
SCAN_BUDGET = 2000


def _bucket_and_name(uri: str) -> tuple[str, str]:
    rest = uri.split("://", 1)[1]
    bucket, _, name = rest.partition("/")
    return bucket, name


def create_job(call: Call) -> Result:
    body = call.body_as(s.JobCreate)
    if body.fields is not None:
        fields = body.fields
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
        guard=call.guard(reply),
    )
    return reply(job)


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
    now = call.deps.clock.now()

    def tx(t: Transaction) -> Job:
        job = repo.tx_get(t, Job, job_id)
        if job is None or not call.owns(job.owner):
            raise not_found("job", job_id)
        changes: dict[str, Any] = {"updated_at": now}
        settings: JobSettings = job.settings
        if body.name is not None:
            changes["name"] = body.name
        if body.fields is not None:
            changes["fields"] = body.fields
        if body.prompt is not None:
            changes["prompt"] = body.prompt
        if body.exports is not None:
            settings = settings.model_copy(update={"exports": [e.spec() for e in body.exports]})
        if "extractor" in body.model_fields_set:
            settings = settings.model_copy(update={"extractor": body.extractor})
        if body.concurrent_runs is not None:
            settings = settings.model_copy(update={"concurrent_runs": body.concurrent_runs})
        changes["settings"] = settings
        updated = job.model_copy(update=changes)
        repo.tx_put(t, updated)
        return updated

    job = call.deps.store.transaction(tx)
    return s.JobOut.of(job, jobs.latest_run(call.deps, job.id))


def delete_job(call: Call) -> Result:
    """Delete a job with its files (and their blobs), runs, tasks (results), exports and operations.

    Children go first and the job last, so a failed delete can simply be repeated.
    """
    job = owned(call, Job, call.params["job_id"])
    if active_runs(call, job.id):
        raise ApiError(409, "job_busy", f"job {job.id} has a run in progress", details={"hint": "Cancel it first."})
    store, blobs = call.deps.store, call.deps.blobs
    users = [a.id for a in repo.scan(store, Automation, filters=[mine(call), Filter("job_id", "==", job.id)])]
    if users:
        raise ApiError(
            409,
            "job_busy",
            f"job {job.id} is used by automations",
            details={"automations": users, "hint": "Delete them first."},
        )
    by_job = [Filter("job_id", "==", job.id)]
    for export in list(repo.scan(store, Export, filters=by_job)):
        if export.destination.kind == "download" and export.external_id:
            blobs.delete(export.external_id)
        store.delete(Export.collection, export.id)
    for task in list(repo.scan(store, ExtractionTask, filters=by_job)):
        store.delete(ExtractionTask.collection, task.id)
    for op in list(repo.scan(store, Operation, filters=[mine(call), *by_job])):
        store.delete(Operation.collection, op.id)
    for run in list(repo.scan(store, Run, filters=by_job)):
        store.delete(Run.collection, run.id)
    buckets: set[str] = set()
    for f in list(repo.scan(store, SourceFile, filters=by_job)):
        if f.blob_uri:
            buckets.add(_bucket_and_name(f.blob_uri)[0])
            blobs.delete(f.blob_uri)
        store.delete(SourceFile.collection, f.id)
    for bucket in buckets:  # what Sluice wrote beside the uploads (split parts)
        for info in list(blobs.list(bucket, prefix=f"jobs/{job.id}/")):
            blobs.delete(info.uri)
    store.delete(Job.collection, job.id)
    return Reply(status=204)


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
