"""Deleting a job with everything it made, or one of its files.

Children go first and the job last, so a delete that failed midway can simply
be repeated. Nothing is deleted while a run of the job is active (or, for a
job, while an automation uses it): :class:`JobBusy`.
"""

from __future__ import annotations

from collections.abc import Sequence

from common.core.errors import PermanentError
from common.core.models import Automation, Export, ExtractionTask, Job, Operation, Run, SourceFile
from common.ports.store import Filter
from common.service import jobs, repo
from common.service.context import Deps


class JobBusy(PermanentError):
    """The job has a run in progress, or automations that use it."""

    def __init__(self, message: str, *, hint: str, automations: Sequence[str] = ()) -> None:
        super().__init__(message, code="job_busy", hint=hint)
        self.automations = list(automations)


def _owned_by(owners: Sequence[str]) -> Filter:
    return Filter("owner", "==", owners[0]) if len(owners) == 1 else Filter("owner", "in", list(owners))


def _check_no_active_run(deps: Deps, job: Job) -> None:
    runs = repo.scan(deps.store, Run, filters=[Filter("job_id", "==", job.id)])
    if any(r.status in jobs.ACTIVE_RUN_STATES for r in runs):
        raise JobBusy(f"job {job.id} has a run in progress", hint="Cancel it first.")


def _bucket_of(uri: str) -> str:
    return uri.split("://", 1)[1].partition("/")[0]


def delete_job(deps: Deps, job: Job, *, owners: Sequence[str]) -> None:
    """Delete ``job`` with its files (and their blobs), runs, tasks (results), exports
    and operations; ``owners`` are the caller's owner ids (the operations and automations
    looked at are theirs)."""
    _check_no_active_run(deps, job)
    store, blobs = deps.store, deps.blobs
    users = [a.id for a in repo.scan(store, Automation, filters=[_owned_by(owners), Filter("job_id", "==", job.id)])]
    if users:
        raise JobBusy(f"job {job.id} is used by automations", hint="Delete them first.", automations=users)
    by_job = [Filter("job_id", "==", job.id)]
    for export in list(repo.scan(store, Export, filters=by_job)):
        if export.destination.kind == "download" and export.external_id:
            blobs.delete(export.external_id)
        store.delete(Export.collection, export.id)
    for task in list(repo.scan(store, ExtractionTask, filters=by_job)):
        store.delete(ExtractionTask.collection, task.id)
    for op in list(repo.scan(store, Operation, filters=[_owned_by(owners), *by_job])):
        store.delete(Operation.collection, op.id)
    for run in list(repo.scan(store, Run, filters=by_job)):
        store.delete(Run.collection, run.id)
    buckets: set[str] = set()
    for f in list(repo.scan(store, SourceFile, filters=by_job)):
        if f.blob_uri:
            buckets.add(_bucket_of(f.blob_uri))
            blobs.delete(f.blob_uri)
        store.delete(SourceFile.collection, f.id)
    for bucket in buckets:  # what Sluice wrote beside the uploads (split parts)
        for info in list(blobs.list(bucket, prefix=f"jobs/{job.id}/")):
            blobs.delete(info.uri)
    store.delete(Job.collection, job.id)


def delete_file(deps: Deps, job: Job, f: SourceFile) -> None:
    """Delete one of ``job``'s files: the record goes (so the same bytes can be uploaded
    again), then its bytes."""
    _check_no_active_run(deps, job)
    deps.store.delete(SourceFile.collection, f.id)
    if f.blob_uri:
        deps.blobs.delete(f.blob_uri)
