"""Request and response bodies of the job API, as pydantic models.

The OpenAPI document is generated from these and the route table, so the
documentation cannot drift from what the handlers validate and return.
Requests forbid unknown fields (a typo is an error, not a silent no-op).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator, model_validator

from common.core.cost import Estimate, Usage
from common.core.errors import PermanentError
from common.core.models import (
    Automation,
    Destination,
    Export,
    ExportFormat,
    ExportSpec,
    ExtractionTask,
    ExtractorName,
    Job,
    Operation,
    Priority,
    Run,
    SourceFile,
)
from common.core.schema import FieldSpec
from common.core.states import ExportStatus, FileStatus, OperationStatus, RunStatus, TaskStatus


class Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


# -- shared ---------------------------------------------------------------------


class ExportSpecIO(BaseModel):
    """An export: a format and a destination (``download``, ``drive:FOLDER``, ``gmail:ADDRESS``)."""

    model_config = ConfigDict(extra="forbid")

    format: ExportFormat = ExportFormat.XLSX
    destination: str = "download"

    @field_validator("destination")
    @classmethod
    def _destination(cls, v: str) -> str:
        return str(Destination.parse(v))

    def spec(self) -> ExportSpec:
        return ExportSpec(format=self.format, destination=Destination.parse(self.destination))

    @classmethod
    def of(cls, spec: ExportSpec) -> ExportSpecIO:
        return cls(format=spec.format, destination=str(spec.destination))


class ErrorBody(Out):
    code: str
    message: str
    details: dict[str, Any] = Field(default_factory=dict)


class ErrorOut(Out):
    error: ErrorBody


class PageQuery(Request):
    limit: int = Field(default=50, ge=1, le=1000)
    cursor: str | None = None


# -- jobs -------------------------------------------------------------------------


class JobCreate(Request):
    name: str = Field(min_length=1, max_length=200)
    kind: str = Field(
        default="extract",
        max_length=100,
        description="What the job does (docs/JOB_KINDS.md); 'extract': documents to tables, with fields or a preset.",
    )
    settings: dict[str, Any] | None = Field(
        default=None, description="The kind's own settings, validated by the kind's settings model."
    )
    fields: list[FieldSpec] | None = Field(default=None, min_length=1, max_length=200)
    preset: str | None = Field(default=None, description="A field preset, e.g. 'invoice', instead of fields.")
    prompt: str = Field(default="", max_length=20_000)
    exports: list[ExportSpecIO] | None = Field(default=None, max_length=10)
    extractor: ExtractorName | None = None
    concurrent_runs: bool | None = Field(
        default=None, description="Allow a run to start while another of this job is active (default: false)."
    )
    review_below: float | None = Field(
        default=None,
        ge=0.0,
        le=1.0,
        description="A run with a value read under this confidence waits in needs_review; "
        "its exports are made when every such value is confirmed or corrected.",
    )

    @model_validator(mode="after")
    def _one_schema(self) -> JobCreate:
        if self.kind != "extract" and self.fields is None and self.preset is None:
            return self  # other kinds need no field schema
        if (self.fields is None) == (self.preset is None):
            raise ValueError("give exactly one of fields or preset")
        return self


class JobUpdate(Request):
    name: str | None = Field(default=None, min_length=1, max_length=200)
    fields: list[FieldSpec] | None = Field(default=None, min_length=1, max_length=200)
    prompt: str | None = Field(default=None, max_length=20_000)
    exports: list[ExportSpecIO] | None = Field(default=None, max_length=10)
    extractor: ExtractorName | None = None
    concurrent_runs: bool | None = None
    review_below: float | None = Field(default=None, ge=0.0, le=1.0, description="null (sent) removes the threshold.")


class RunSummary(Out):
    id: str
    run_number: int
    status: RunStatus
    created_at: datetime

    @classmethod
    def of(cls, run: Run) -> RunSummary:
        return cls(id=run.id, run_number=run.run_number, status=run.status, created_at=run.created_at)


class JobOut(Out):
    id: str
    name: str
    kind: str = "extract"
    settings: dict[str, Any] = Field(default_factory=dict, description="The kind's own settings.")
    fields: list[FieldSpec]
    prompt: str
    exports: list[ExportSpecIO]
    extractor: ExtractorName | None
    concurrent_runs: bool
    review_below: float | None = None
    created_at: datetime
    updated_at: datetime
    latest_run: RunSummary | None = None

    @classmethod
    def of(cls, job: Job, latest: Run | None = None) -> JobOut:
        return cls(
            id=job.id,
            name=job.name,
            kind=job.kind,
            settings=job.kind_settings,
            fields=job.fields,
            prompt=job.prompt,
            exports=[ExportSpecIO.of(s) for s in job.settings.exports],
            extractor=job.settings.extractor,
            concurrent_runs=job.settings.concurrent_runs,
            review_below=job.settings.review_below,
            created_at=job.created_at,
            updated_at=job.updated_at,
            latest_run=None if latest is None else RunSummary.of(latest),
        )


class JobList(Out):
    items: list[JobOut]
    next_cursor: str | None


class JobQuery(PageQuery):
    status: RunStatus | Literal["idle"] | None = Field(
        default=None, description="The latest run's status ('idle': no run yet)."
    )
    created_after: AwareDatetime | None = None
    created_before: AwareDatetime | None = None
    sort: Literal["created_at", "-created_at", "updated_at", "-updated_at", "name", "-name"] = "-created_at"


# -- files ------------------------------------------------------------------------


class FileOut(Out):
    id: str
    job_id: str
    name: str
    source_type: str
    status: FileStatus
    size: int | None
    mime_type: str | None
    sha256: str | None
    error: dict[str, str] | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, f: SourceFile) -> FileOut:
        return cls(
            id=f.id,
            job_id=f.job_id,
            name=f.name,
            source_type=f.source_type.value,
            status=f.status,
            size=f.size,
            mime_type=f.mime_type,
            sha256=f.sha256,
            error=f.error,
            created_at=f.created_at,
            updated_at=f.updated_at,
        )


class FileList(Out):
    items: list[FileOut]
    next_cursor: str | None


class UploadUrlRequest(Request):
    name: str = Field(min_length=1, max_length=500)
    content_type: str = Field(default="application/octet-stream", max_length=200)
    size: int | None = Field(default=None, ge=0)


class UploadUrlOut(Out):
    file_id: str
    method: Literal["PUT"]
    url: str
    headers: dict[str, str]
    expires_at: datetime


# -- runs -------------------------------------------------------------------------


class RunCreate(Request):
    priority: Priority = Priority.NORMAL
    schedule_time: AwareDatetime | None = Field(default=None, description="Start then (RFC 3339 with a timezone).")


class CountersOut(Out):
    total: int
    completed: int
    failed: int
    cancelled: int
    remaining: int


def _unit(kind: str) -> str:
    from common import kinds

    try:
        return kinds.get(kind).unit
    except PermanentError:  # a kind this deployment no longer has
        return "items"


class RunOut(Out):
    id: str
    job_id: str
    run_number: int
    kind: str = "extract"
    unit: str = Field(default="documents", description="What the kind's work counts (documents, rows, ...).")
    outputs: dict[str, Any] | None = Field(
        default=None, description="What the kind's fan-in made of the run's items (set when it completes)."
    )
    deadline_at: datetime | None = Field(default=None, description="The run fails with run_timeout if open then.")
    phase: str | None = Field(
        default=None,
        description="Kinds with a plan or finish step: planning, running (its items), writing (its finish).",
    )
    status: RunStatus
    priority: Priority
    schedule_time: datetime | None
    counters: CountersOut
    operation_id: str
    exports: list[ExportSpecIO]
    fields: list[FieldSpec] | None = Field(
        default=None, description="The job's fields as they were when the run started (what its tasks extract)."
    )
    started_at: datetime | None
    finished_at: datetime | None
    error: dict[str, str] | None
    estimate: Estimate | None = Field(default=None, description="What the run was expected to cost when it started")
    usage: Usage | None = Field(
        default=None, description="What its items used: tokens, pages and money (recorded when the run completes)"
    )
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, run: Run) -> RunOut:
        c = run.counters
        return cls(
            id=run.id,
            job_id=run.job_id,
            run_number=run.run_number,
            kind=run.kind,
            unit=_unit(run.kind),
            outputs=run.outputs,
            deadline_at=run.deadline_at,
            phase=run.phase,
            status=run.status,
            priority=run.priority,
            schedule_time=run.schedule_time,
            counters=CountersOut(
                total=c.total,
                completed=c.completed,
                failed=c.failed,
                cancelled=c.cancelled,
                remaining=max(0, c.total - c.terminal),
            ),
            operation_id=run.operation_id,
            exports=[ExportSpecIO.of(s) for s in run.exports],
            fields=run.fields,
            started_at=run.started_at,
            finished_at=run.finished_at,
            error=run.error,
            estimate=run.estimate,
            usage=run.usage,
            created_at=run.created_at,
            updated_at=run.updated_at,
        )


class RunList(Out):
    items: list[RunOut]
    next_cursor: str | None


class RunQuery(PageQuery):
    status: RunStatus | None = None
    job_id: str | None = None


class RetryRequest(Request):
    scope: Literal["failed", "all"] = "failed"
    task_ids: list[str] | None = Field(default=None, min_length=1, max_length=500)


class RetryOut(Out):
    run: RunOut
    retried: int


class AttemptOut(Out):
    """One attempt at a task (the latest 20 are kept)."""

    attempt: int = Field(description="The attempt number counted against the retry budget")
    started_at: datetime
    ended_at: datetime | None
    outcome: Literal["running", "completed", "failed", "retry", "waiting", "abandoned", "cancelled"] = Field(
        description="retry: failed and tried again after delay_s; waiting: not counted (Sluice's pacing or an "
        "open circuit), tried again after delay_s; abandoned: its worker died and another attempt took over"
    )
    error_code: str | None
    error_message: str | None
    delay_s: float | None = Field(description="The delay chosen before the next attempt")


class TaskOut(Out):
    id: str
    run_id: str
    file_id: str
    file_name: str
    status: TaskStatus
    priority: Priority
    attempts: int
    error: dict[str, str] | None
    pages: int | None
    rows: int | None
    # The item's progress in its kind's unit (e.g. the rows of an enrich range), when the kind measures it.
    unit: str | None = None
    units_done: int | None = None
    units_total: int | None = None
    input_tokens: int | None
    output_tokens: int | None
    started_at: datetime | None
    finished_at: datetime | None
    history: list[AttemptOut]

    @classmethod
    def of(cls, t: ExtractionTask) -> TaskOut:
        unit, measured = _item_units(t)
        return cls(
            unit=unit,
            units_done=None if measured is None else measured[0],
            units_total=None if measured is None else measured[1],
            id=t.id,
            run_id=t.run_id,
            file_id=t.file_id,
            file_name=t.file_name,
            status=t.status,
            priority=t.priority,
            attempts=t.attempts,
            error=t.error,
            pages=None if t.result is None else t.result.pages,
            rows=None if t.result is None else len(t.result.results),
            input_tokens=t.usage.input_tokens,
            output_tokens=t.usage.output_tokens,
            started_at=t.started_at,
            finished_at=t.finished_at,
            history=[AttemptOut.model_validate(a.model_dump()) for a in t.history],
        )


def _item_units(t: ExtractionTask) -> tuple[str | None, tuple[int, int] | None]:
    """The item's kind's unit and its (done, total) in it, if the kind measures its items."""
    from common import kinds

    try:
        kind = kinds.get(t.kind)
    except PermanentError:
        return None, None
    measured = kind.item_units(t) if kind.item_units is not None else None
    return (kind.unit, measured) if measured is not None else (None, None)


class TaskList(Out):
    items: list[TaskOut]
    next_cursor: str | None


class TaskQuery(PageQuery):
    status: TaskStatus | None = None


# -- exports ----------------------------------------------------------------------


class ExportCreate(ExportSpecIO):
    pass


class RunFileOut(Out):
    """A file a run's kind made (the research kind's report), with a signed download link."""

    name: str
    content_type: str | None = None
    bytes: int | None = None
    url: str = Field(description="A signed link, valid until url_expires_at")
    url_expires_at: datetime


class RunFileList(Out):
    items: list[RunFileOut]


class ExportOut(Out):
    id: str
    run_id: str
    job_id: str
    format: ExportFormat
    destination: str
    status: ExportStatus
    url: str | None = Field(description="Download: a signed link, valid until url_expires_at")
    url_expires_at: datetime | None
    row_count: int | None
    failed_count: int | None
    error: dict[str, str] | None
    created_at: datetime
    finished_at: datetime | None

    @classmethod
    def of(cls, e: Export, url: str | None, url_expires_at: datetime | None = None) -> ExportOut:
        return cls(
            id=e.id,
            run_id=e.run_id,
            job_id=e.job_id,
            format=e.format,
            destination=str(e.destination),
            status=e.status,
            url=url,
            url_expires_at=url_expires_at,
            row_count=e.row_count,
            failed_count=e.failed_count,
            error=e.error,
            created_at=e.created_at,
            finished_at=e.finished_at,
        )


class ExportList(Out):
    items: list[ExportOut]
    next_cursor: str | None


# -- operations -------------------------------------------------------------------


class OperationOut(Out):
    id: str
    kind: str
    target_id: str
    job_id: str | None
    status: OperationStatus
    stage: str
    message: str
    pct: float
    done: int
    failed: int
    cancelled: int
    total: int
    eta_seconds: float | None
    error: dict[str, str] | None
    counts: dict[str, int] | None = Field(
        default=None, description="The kind's own figures for a run (ingest: pages read, chunks made, ...)."
    )
    final: bool
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None

    @classmethod
    def of(cls, op: Operation, *, cancelled: int = 0) -> OperationOut:
        return cls(
            id=op.id,
            kind=op.kind,
            target_id=op.target_id,
            job_id=op.job_id,
            status=op.status,
            stage=op.stage,
            message=op.message,
            pct=op.pct,
            done=op.done,
            failed=op.failed,
            cancelled=cancelled,
            total=op.total,
            eta_seconds=op.eta_seconds,
            error=op.error,
            counts=op.counts,
            final=op.status is not OperationStatus.RUNNING,
            created_at=op.created_at,
            updated_at=op.updated_at,
            finished_at=op.finished_at,
        )


class OperationList(Out):
    items: list[OperationOut]
    next_cursor: str | None


# -- imports ----------------------------------------------------------------------


class DriveImportRequest(Request):
    item_ids: list[str] = Field(min_length=1, max_length=1000, description="Drive file or folder ids.")


class GmailItemIn(Request):
    message_id: str = Field(min_length=1)
    attachment_id: str | None = None


class GmailImportRequest(Request):
    account: str = Field(min_length=3)
    items: list[GmailItemIn] = Field(min_length=1, max_length=1000)


# -- automations -------------------------------------------------------------------


class AutomationCreate(Request):
    name: str = Field(min_length=1, max_length=200)
    account: str = Field(min_length=3, description="The Gmail address whose mail triggers it.")
    job_id: str
    query: str = Field(default="has:attachment", max_length=1000)
    enabled: bool = True
    export: ExportSpecIO = Field(default_factory=ExportSpecIO)


class AutomationUpdate(Request):
    name: str | None = Field(default=None, min_length=1, max_length=200)
    query: str | None = Field(default=None, max_length=1000)
    enabled: bool | None = None
    export: ExportSpecIO | None = None


class AutomationOut(Out):
    id: str
    name: str
    enabled: bool
    trigger_type: str
    account: str
    query: str
    job_id: str
    export: ExportSpecIO
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, a: Automation) -> AutomationOut:
        return cls(
            id=a.id,
            name=a.name,
            enabled=a.enabled,
            trigger_type=a.trigger_type,
            account=a.account,
            query=a.query,
            job_id=a.job_id,
            export=ExportSpecIO.of(a.export),
            created_at=a.created_at,
            updated_at=a.updated_at,
        )


class AutomationList(Out):
    items: list[AutomationOut]
    next_cursor: str | None


# -- integrations --------------------------------------------------------------------


class IntegrationOut(Out):
    id: str
    account: str
    scopes: list[str]
    status: str
    status_reason: str | None
    refresh_failures: int
    connected_at: datetime
    updated_at: datetime


GoogleFeature = Literal["drive", "gmail"]


def _all_features() -> list[GoogleFeature]:
    return ["drive", "gmail"]


class GoogleConnectIn(Request):
    features: list[GoogleFeature] = Field(
        default_factory=_all_features, min_length=1, description="What Sluice may do with the account."
    )


class GoogleConnectOut(Out):
    authorization_url: str = Field(description="Send the user's browser here to give consent.")
    expires_at: datetime


class GoogleCallbackQuery(Request):
    state: str = Field(min_length=16, max_length=200)
    code: str | None = Field(default=None, max_length=2000)
    error: str | None = Field(default=None, max_length=200)


class IntegrationList(Out):
    items: list[IntegrationOut]


# -- stats and dead letters ---------------------------------------------------------------


class QueueStats(Out):
    subscription: str
    depth: int | None = Field(
        description="Waiting and in-flight work: the bus's messages (source bus), or the open work items whose"
        " messages this subscription carries (source store, on Pub/Sub); null when not counted"
    )
    oldest_age_s: float | None = Field(description="Age of the oldest of them, in seconds")
    dead_lettered: int = Field(description="Dead letters from this subscription not yet replayed")
    source: Literal["bus", "store", "none"]


class CircuitStats(Out):
    """One external dependency's circuit breaker (shared by every instance)."""

    dependency: str = Field(description="vertex, drive, gmail or oauth_token")
    state: Literal["closed", "open", "half_open"]
    consecutive_failures: int
    open_until: datetime | None = Field(description="While open: when the next probe may go")
    opened_at: datetime | None
    opens: int = Field(description="How many times it has opened")
    last_error: str | None = Field(description="The code of the last failure counted")


class MonthOut(Out):
    """This calendar month (UTC): its runs' usage and, for one user, the budget."""

    start: datetime
    runs: int
    input_tokens: int
    output_tokens: int
    pages: int
    cost: float
    currency: str
    budget: float | None = Field(description="The monthly budget (null: none)")
    remaining: float | None = Field(description="Budget left this month (null: no budget)")


class StatsQuery(Request):
    window: Literal["1h", "24h"] = Field(
        default="24h", description="The series' span: the last hour in 5-minute buckets, or 24 hours in 1-hour buckets"
    )


class BucketOut(Out):
    start: datetime = Field(description="The bucket covers [start, start + interval_s)")
    completed: int
    failed: int


class StageSeriesOut(Out):
    stage: str = Field(description="A job kind's items (by kind name), or export")
    unit: str = Field(description="What the stage counts (the kind's unit; exports)")
    buckets: list[BucketOut]


class SeriesOut(Out):
    """Completed and failed items per interval, per stage, by when they finished."""

    window: Literal["1h", "24h"]
    interval_s: int
    start: datetime
    end: datetime
    stages: list[StageSeriesOut]


class StatsOut(Out):
    """Your own records: counts, usage (all time and this month) and your budget."""

    jobs: int
    runs: dict[str, int]
    tasks: dict[str, int]
    pages: int
    input_tokens: int
    output_tokens: int
    cost: float = Field(description="Money your runs used, all time")
    currency: str
    month: MonthOut
    queues: list[QueueStats]
    circuits: list[CircuitStats]
    series: SeriesOut


class SpenderOut(Out):
    owner: str
    cost: float


class GlobalStatsOut(Out):
    """Everyone's records (operators only)."""

    jobs: int
    runs: dict[str, int]
    tasks: dict[str, int]
    pages: int
    input_tokens: int
    output_tokens: int
    cost: float
    currency: str
    month: MonthOut
    top_spenders: list[SpenderOut] = Field(description="This month's 20 biggest spenders")
    queues: list[QueueStats]
    circuits: list[CircuitStats]


class BudgetCheckOut(Out):
    limit: float | None = Field(description="The monthly budget (null: none)")
    spent: float = Field(description="This month: finished runs' cost, open runs' estimates")
    remaining: float | None
    allowed: bool = Field(description="Whether a run started now would be accepted")
    currency: str


class EstimateOut(Estimate):
    """A run's expected work and money, before it starts, and the budget it would draw on."""

    model_config = ConfigDict(extra="forbid")

    budget: BudgetCheckOut


class BudgetIn(Request):
    monthly_limit: float | None = Field(ge=0, description="USD per calendar month; null: no budget for this user")


class BudgetOut(Out):
    owner: str
    monthly_limit: float | None
    updated_at: datetime


class DeadLetterOut(Out):
    id: str = Field(description="Replay it by this id (the bus's sequence number; the message id on Pub/Sub)")
    seq: int | None = Field(description="The embedded bus's sequence number (null on Pub/Sub)")
    subscription: str
    message_id: str
    kind: str | None
    job_id: str | None
    run_id: str | None
    task_id: str | None
    attempts: int
    last_error: str | None
    dead_lettered_at: datetime
    replayed_at: datetime | None


class DeadLetterList(Out):
    items: list[DeadLetterOut]


class ReplayOut(Out):
    id: str
    seq: int | None
    message_id: str


class KindOut(Out):
    """A job kind: what its settings are and what its progress counts."""

    name: str
    summary: str = Field(description="The kind's settings model's first line")
    unit: str = Field(description="What a run's progress counts: documents, rows, chunks, sections...")
    settings_schema: dict[str, Any] = Field(description="JSON Schema of the job's settings for this kind")
    user_created: bool = Field(
        True, description="Whether POST /v1/jobs makes jobs of this kind (false: the platform makes them)"
    )


class KindList(Out):
    items: list[KindOut]
