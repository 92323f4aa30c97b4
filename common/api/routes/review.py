"""Review routes: a run's values with their confidence, one task's page with the value's box, decisions.

``GET /v1/runs/{run_id}/review`` is the grid; ``GET /v1/tasks/{task_id}/review``
adds, per field, where its snippet sits on its page (fractions of the page,
located in the PDF's text layer); ``GET /v1/tasks/{task_id}/pages/{page}``
renders that page as PNG (server-side, pypdfium2); ``POST
/v1/tasks/{task_id}/review`` confirms or corrects a value. The gate itself
(``needs_review`` holding the exports) lives in :mod:`common.service.review`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from flask import Response, request
from pydantic import Field, model_validator

from common.api.call import Call, Result, Route
from common.api.errors import ApiError
from common.api.schemas import Out, Request
from common.core.errors import UnreadableDocument
from common.core.models import ExtractionTask, Run, SourceFile
from common.core.review import FieldReview, ReviewAction, ReviewEntry, flagged_fields
from common.core.schema import Scalar
from common.core.states import RunStatus, TaskStatus
from common.ports.store import Filter
from common.service import repo, review

# A grid shows at most this many tasks (the run's first by file name).
MAX_GRID_TASKS = 1000


class ReviewEntryOut(Out):
    action: ReviewAction
    old: Scalar = None
    new: Scalar = None
    by: str
    at: datetime

    @classmethod
    def of(cls, e: ReviewEntry) -> ReviewEntryOut:
        return cls(action=e.action, old=e.old, new=e.new, by=e.by, at=e.at)


class BoxOut(Out):
    left: float
    top: float
    width: float
    height: float


class FieldOut(Out):
    name: str
    value: Scalar = Field(description="The value that stands: the correction if any, else what was read.")
    read: Scalar = Field(description="What the extractor read.")
    confidence: float
    page: int | None = None
    snippet: str | None = None
    flagged: bool = Field(description="Under the run's review threshold.")
    review: Literal["confirmed", "corrected"] | None = None
    reviewed_by: str | None = None
    reviewed_at: datetime | None = None
    history: list[ReviewEntryOut] = Field(default_factory=list)
    box: BoxOut | None = Field(default=None, description="Only on a task's review: the snippet's box on its page.")


class TaskReviewOut(Out):
    task_id: str
    file_id: str
    file_name: str
    status: TaskStatus
    pages: int
    error: dict[str, str] | None = None
    fields: list[FieldOut]


class RunReviewOut(Out):
    run_id: str
    status: RunStatus
    review_below: float | None
    pending: int = Field(description="Flagged values not yet confirmed or corrected.")
    tasks: list[TaskReviewOut]


class ReviewIn(Request):
    field: str = Field(min_length=1, max_length=200)
    action: ReviewAction
    value: Scalar = Field(default=None, description="The corrected value (action 'corrected').")

    @model_validator(mode="after")
    def _value_for_correction(self) -> ReviewIn:
        if self.action == "confirmed" and self.value is not None:
            raise ValueError("a confirmation takes no value")
        return self


class ReviewOut(Out):
    field: FieldOut
    run_status: RunStatus
    pending: int


def _owned(call: Call, model: type[Run] | type[ExtractionTask], ident: str, what: str) -> Run | ExtractionTask:
    found = repo.get(call.deps.store, model, ident)
    if found is None or not call.owns(found[0].owner):
        raise ApiError(404, "not_found", f"{what} {ident} not found")
    return found[0]


def _task(call: Call) -> ExtractionTask:
    task = _owned(call, ExtractionTask, call.params["task_id"], "task")
    assert isinstance(task, ExtractionTask)
    return task


def _fields(task: ExtractionTask, threshold: float | None, reviews: dict[str, FieldReview]) -> list[FieldOut]:
    if task.result is None:
        return []
    flagged = set(flagged_fields(task, threshold))
    out: list[FieldOut] = []
    for name, fv in task.result.fields.items():
        r = reviews.get(name)
        out.append(
            FieldOut(
                name=name,
                value=fv.value if r is None else r.value,
                read=fv.value,
                confidence=fv.confidence,
                page=fv.page,
                snippet=fv.snippet,
                flagged=name in flagged,
                review=None if r is None else r.action,
                reviewed_by=None if r is None else r.by,
                reviewed_at=None if r is None else r.at,
                history=[] if r is None else [ReviewEntryOut.of(e) for e in r.history],
            )
        )
    return out


def _task_out(task: ExtractionTask, threshold: float | None, reviews: dict[str, FieldReview]) -> TaskReviewOut:
    return TaskReviewOut(
        task_id=task.id,
        file_id=task.file_id,
        file_name=task.file_name,
        status=task.status,
        pages=task.result.pages if task.result is not None else 0,
        error=task.error,
        fields=_fields(task, threshold, reviews),
    )


def run_review(call: Call) -> Result:
    run = _owned(call, Run, call.params["run_id"], "run")
    assert isinstance(run, Run)
    store = call.deps.store
    threshold = review.threshold(run)
    reviews = review.reviews_of_run(store, run.id)
    tasks = []
    for i, task in enumerate(repo.scan(store, ExtractionTask, filters=[Filter("run_id", "==", run.id)])):
        if i >= MAX_GRID_TASKS:
            break
        tasks.append(_task_out(task, threshold, reviews.get(task.id, {})))
    tasks.sort(key=lambda t: (t.file_name, t.task_id))
    return RunReviewOut(
        run_id=run.id,
        status=run.status,
        review_below=threshold,
        pending=len(review.pending(store, run)),
        tasks=tasks,
    )


def _document(call: Call, task: ExtractionTask) -> bytes:
    found = repo.get(call.deps.store, SourceFile, task.file_id)
    if found is None or not found[0].blob_uri:
        raise ApiError(404, "not_found", f"the document of task {task.id} is gone")
    return call.deps.blobs.get_bytes(found[0].blob_uri, max_bytes=call.deps.settings.max_document_bytes)


def task_review(call: Call) -> Result:
    from common.extraction.pages import locate

    task = _task(call)
    run_found = repo.get(call.deps.store, Run, task.run_id)
    threshold = None if run_found is None else review.threshold(run_found[0])
    reviews = review.reviews_of_run(call.deps.store, task.run_id).get(task.id, {})
    out = _task_out(task, threshold, reviews)
    if task.result is None or not any(f.page for f in out.fields):
        return out
    data = _document(call, task)
    for f in out.fields:
        if f.page is None:
            continue
        needles = [n for n in (f.snippet, *(f.snippet or "").splitlines(), str(f.read or "")) if n]
        try:
            box = locate(data, f.page, needles)
        except UnreadableDocument:
            break  # an image or e-invoice XML: no text layer to point into
        if box is not None:
            f.box = BoxOut(left=box.left, top=box.top, width=box.width, height=box.height)
    return out


def task_page(call: Call) -> Result:
    from common.extraction.pages import render_png

    task = _task(call)
    try:
        page = int(call.params["page"])
    except ValueError:
        raise ApiError(404, "not_found", f"page {call.params['page']} not found") from None
    try:
        width = min(2000, max(200, int(request.args.get("width", "1100"))))
    except ValueError:
        width = 1100
    data = _document(call, task)
    try:
        png = render_png(data, page, width_px=width)
    except IndexError as exc:
        raise ApiError(404, "not_found", f"{exc}: no such page") from None
    except UnreadableDocument as exc:
        raise ApiError(
            422, "not_renderable", exc.message, details={"hint": "Only PDF documents are shown page by page."}
        ) from None
    return Response(png, mimetype="image/png", headers={"Cache-Control": "private, max-age=300"})


def review_value(call: Call) -> Result:
    task = _task(call)
    body = call.body_as(ReviewIn)
    saved = review.review_field(
        call.deps, call.sender, task, body.field, action=body.action, value=body.value, by=call.owner
    )
    run, _ = repo.require(call.deps.store, Run, task.run_id)
    threshold = review.threshold(run)
    field = (
        next(f for f in _fields(task, threshold, {saved.field: saved}) if f.name == saved.field)
        if (task.result is not None and saved.field in task.result.fields)
        else FieldOut(
            name=saved.field,
            value=saved.value,
            read=saved.original,
            confidence=1.0,
            flagged=False,
            review=saved.action,
            reviewed_by=saved.by,
            reviewed_at=saved.at,
            history=[ReviewEntryOut.of(e) for e in saved.history],
        )
    )
    return ReviewOut(field=field, run_status=run.status, pending=len(review.pending(call.deps.store, run)))


E404 = (401, 404)

ROUTES: list[Route] = [
    Route(
        "GET",
        "/v1/runs/{run_id}/review",
        run_review,
        "A run's extracted values with their confidence and review state",
        "review",
        response=RunReviewOut,
        errors=E404,
    ),
    Route(
        "GET",
        "/v1/tasks/{task_id}/review",
        task_review,
        "One task's values with where each was read (page and box)",
        "review",
        response=TaskReviewOut,
        errors=E404,
    ),
    Route(
        "GET",
        "/v1/tasks/{task_id}/pages/{page}",
        task_page,
        "A page of the task's document as PNG (query: width in pixels)",
        "review",
        reply="file",
        errors=(401, 404, 422),
    ),
    Route(
        "POST",
        "/v1/tasks/{task_id}/review",
        review_value,
        "Confirm or correct a value; the last decision on a needs_review run releases its exports",
        "review",
        body=ReviewIn,
        response=ReviewOut,
        errors=(401, 404, 409, 422),
    ),
]
