"""The domain records Sluice keeps, as pydantic models.

Stored documents are these models dumped to JSON (``to_doc``) and validated
back (``from_doc``); each collection name lives on the model so the store
adapters stay generic.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any, ClassVar, Literal, Self

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, PlainSerializer, computed_field, field_serializer

from common.core.cost import Estimate, Usage
from common.core.schema import FieldSpec, FieldValue, Scalar
from common.core.states import (
    ExportStatus,
    FileStatus,
    OperationStatus,
    RunStatus,
    TaskStatus,
)


def format_timestamp(dt: datetime) -> str:
    """Fixed-width UTC ISO 8601, so stored timestamps sort as strings."""
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# Every stored time: timezone-aware, and serialised in the fixed-width form.
Timestamp = Annotated[AwareDatetime, PlainSerializer(format_timestamp, return_type=str, when_used="json")]


class Record(BaseModel):
    """Base of every stored record: an id, an owner and timestamps."""

    model_config = ConfigDict(extra="ignore", validate_assignment=False)
    collection: ClassVar[str]

    id: str
    owner: str
    created_at: Timestamp
    updated_at: Timestamp

    def to_doc(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> Self:
        return cls.model_validate(doc)


class ExportFormat(StrEnum):
    CSV = "csv"
    XLSX = "xlsx"


class Priority(StrEnum):
    LOW = "low"
    NORMAL = "normal"
    HIGH = "high"
    URGENT = "urgent"

    @property
    def rank(self) -> int:
        """Higher dispatches first."""
        return {"low": 0, "normal": 1, "high": 2, "urgent": 3}[self.value]


class Destination(BaseModel):
    """Where an export goes: ``download``, ``drive:FOLDER`` or ``gmail:ADDRESS``."""

    model_config = ConfigDict(frozen=True)

    kind: Literal["download", "drive", "gmail"] = "download"
    target: str | None = None  # Drive folder id (None: root) or e-mail address

    @classmethod
    def parse(cls, spec: str) -> Destination:
        head, _, tail = spec.partition(":")
        if head == "download" and not tail:
            return cls(kind="download")
        if head == "drive":
            return cls(kind="drive", target=tail or None)
        if head == "gmail" and "@" in tail:
            return cls(kind="gmail", target=tail)
        raise ValueError(f"destination {spec!r} must be download, drive:FOLDER or gmail:ADDRESS")

    def __str__(self) -> str:
        return self.kind if self.target is None else f"{self.kind}:{self.target}"


class ExportSpec(BaseModel):
    model_config = ConfigDict(frozen=True)

    format: ExportFormat = ExportFormat.XLSX
    destination: Destination = Destination()


class ExtractorName(StrEnum):
    OFFLINE = "offline"  # text layer + e-invoice XML, no network
    GEMINI = "gemini"  # Gemini on Vertex AI


class JobSettings(BaseModel):
    exports: list[ExportSpec] = Field(default_factory=lambda: [ExportSpec()])
    extractor: ExtractorName | None = None  # None: the deployment's default
    # False: a run may start only when the job's previous run has finished.
    concurrent_runs: bool = False
    # A run with a value read under this confidence waits in needs_review (None: no review).
    review_below: float | None = Field(default=None, ge=0.0, le=1.0)


# The kind every record made before kinds existed is (document extraction).
DEFAULT_KIND = "extract"


class Job(Record):
    collection: ClassVar[str] = "jobs"

    name: str
    # What the job does (common.kinds): its runs fan out, handle items and fan in as this kind declares.
    kind: str = DEFAULT_KIND
    # The kind's own settings, validated by its settings model when the job is created.
    kind_settings: dict[str, Any] = Field(default_factory=dict)
    fields: list[FieldSpec] = Field(default_factory=list)
    prompt: str = ""
    settings: JobSettings = Field(default_factory=JobSettings)
    next_run_number: int = 1
    # A caller-chosen identity (the CLI's hash of its command line) so that
    # running the same command again finds the same job.
    key: str | None = None
    # The job's latest run start; while that run is active, another may not start.
    active_run_id: str | None = None


class SourceType(StrEnum):
    UPLOAD = "upload"
    GDRIVE = "gdrive"
    GMAIL = "gmail"


class FileType(StrEnum):
    DOCUMENT = "document"
    ARCHIVE = "archive"  # kept for audit; its members are their own files


class SourceFile(Record):
    collection: ClassVar[str] = "files"

    job_id: str
    source_type: SourceType
    external_id: str  # upload: content hash; gdrive: file id; gmail: "{msg}:{att}"
    name: str
    blob_uri: str | None = None
    mime_type: str | None = None
    size: int | None = None
    sha256: str | None = None
    file_type: FileType = FileType.DOCUMENT
    parent_id: str | None = None  # the archive a member came from
    # Other names under which these same bytes were added to the job: read
    # once, but each name gets its own rows (``duplicate_of`` says whose).
    duplicate_names: list[str] = Field(default_factory=list)
    status: FileStatus = FileStatus.PENDING
    error: dict[str, str] | None = None
    # Page count, recorded the first time a run's cost is estimated (None: not counted yet).
    pages: int | None = None


class RunCounters(BaseModel):
    total: int = 0
    completed: int = 0
    failed: int = 0
    cancelled: int = 0

    @property
    def terminal(self) -> int:
        return self.completed + self.failed + self.cancelled

    @property
    def all_terminal(self) -> bool:
        return self.terminal >= self.total


class StepState(BaseModel):
    """A kind's effectful run step (``plan`` before the items, ``finish`` after them) on its run.

    ``attempts`` counts the claims; while ``lease_until`` is ahead, the attempt
    that delivered ``message_id`` holds the step and other deliveries wait.
    ``errors`` are the earlier attempts' errors (the last few).
    """

    attempts: int = 0
    message_id: str | None = None
    delivery: int = 0  # the bus's delivery attempt of ``message_id`` that holds it
    lease_until: Timestamp | None = None
    errors: list[dict[str, str]] = Field(default_factory=list)


class StepSpend(BaseModel):
    """What a run's effectful step (``plan`` / ``finish``) spent on a model, saved with the step's outcome."""

    step: str
    model: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0


class Run(Record):
    collection: ClassVar[str] = "runs"

    job_id: str
    run_number: int
    kind: str = DEFAULT_KIND
    kind_settings: dict[str, Any] | None = None  # frozen at start, like ``fields``
    status: RunStatus = RunStatus.PENDING
    counters: RunCounters = Field(default_factory=RunCounters)
    priority: Priority = Priority.NORMAL
    schedule_time: Timestamp | None = None
    operation_id: str
    exports: list[ExportSpec] = Field(default_factory=list)
    # The job's field schema, prompt and settings as they were when the run was
    # recorded (None on runs recorded before runs froze them: the job's own).
    fields: list[FieldSpec] | None = None
    prompt: str | None = None
    settings: JobSettings | None = None
    started_at: Timestamp | None = None
    finished_at: Timestamp | None = None
    error: dict[str, str] | None = None
    # When the cleanup sweep found it running past SLUICE_RUN_TIMEOUT_S (reported once).
    stalled_at: Timestamp | None = None
    # The kind's run timeout: past it the run fails (``run_timeout``) and its open items are cancelled.
    deadline_at: Timestamp | None = None
    # What the kind's fan-in made of the items, stored by the fan-in that completed the run.
    outputs: dict[str, Any] | None = None
    # Cost: what was expected when the run was recorded, and what its items used
    # (summed at the fan-in that completes it).
    estimate: Estimate | None = None
    usage: Usage | None = None
    # Kinds with effectful steps (common.kinds.Kind.plan / finish): "planning", "running", "writing".
    phase: str | None = None
    # The item specs the kind's plan made, saved once (the first saved plan wins).
    plan: list[dict[str, Any]] | None = None
    plan_step: StepState | None = None
    # What the kind's finish made, saved once; the fan-in then completes the run with it.
    finish_outputs: dict[str, Any] | None = None
    finish_step: StepState | None = None
    # The model tokens its plan and finish spent (the items' are on the items); priced into ``usage``.
    step_usage: list[StepSpend] = Field(default_factory=list)

    def frozen(self, job: Job) -> Job:
        """``job`` with the fields, prompt and settings this run froze when it started."""
        changes: dict[str, Any] = {}
        if self.fields is not None:
            changes["fields"] = self.fields
        if self.prompt is not None:
            changes["prompt"] = self.prompt
        if self.settings is not None:
            changes["settings"] = self.settings
        if self.kind_settings is not None:
            changes["kind_settings"] = self.kind_settings
        return job.model_copy(update=changes) if changes else job


class TaskResult(BaseModel):
    """What a completed task stored: the result shape plus provenance."""

    columns: list[str]
    results: list[list[Any]]
    row_pages: list[int | None] = Field(default_factory=list)
    fields: dict[str, FieldValue] = Field(default_factory=dict)
    method: str
    pages: int = 0
    notes: list[str] = Field(default_factory=list)
    # The kind's own figures for this item (``Kind.figures``), totalled in its run's progress.
    figures: dict[str, int] = Field(default_factory=dict)


class TaskUsage(BaseModel):
    input_tokens: int | None = None
    output_tokens: int | None = None
    latency_ms: float | None = None


AttemptOutcome = Literal["running", "completed", "failed", "retry", "waiting", "abandoned", "cancelled"]

# A task keeps its latest attempts, not all of them: a record stays small however often it waits.
MAX_ATTEMPT_HISTORY = 20
_ERROR_MESSAGE_CHARS = 500


class AttemptRecord(BaseModel):
    """One attempt at a task, as the user sees it in its history.

    ``outcome``: ``running`` (still going), ``completed``, ``failed`` (the task
    failed with it), ``retry`` (failed, tried again after ``delay_s``),
    ``waiting`` (not counted: Sluice's own pacing or an open circuit; tried
    again after ``delay_s``), ``abandoned`` (its worker died and another
    attempt took over) or ``cancelled``.
    """

    attempt: int  # the attempt number counted against the retry budget
    started_at: Timestamp
    ended_at: Timestamp | None = None
    outcome: AttemptOutcome = "running"
    error_code: str | None = None
    error_message: str | None = None
    delay_s: float | None = None

    @classmethod
    def error_fields(cls, error: dict[str, str] | None) -> dict[str, str | None]:
        if error is None:
            return {"error_code": None, "error_message": None}
        return {"error_code": error.get("code"), "error_message": error.get("message", "")[:_ERROR_MESSAGE_CHARS]}


class WorkItem(Record):
    """One unit of a run's work, for every kind (a document, a row, a chunk...).

    Stored in the ``tasks`` collection (records made before kinds load as
    ``extract`` items). ``file_id``/``file_name`` name the input the item came
    from (for items that are not files: its key and a label).
    """

    collection: ClassVar[str] = "tasks"

    run_id: str
    job_id: str
    kind: str = DEFAULT_KIND
    file_id: str
    file_name: str
    # What the kind's fan-out gave this item besides its input (opaque to the platform).
    params: dict[str, Any] = Field(default_factory=dict)
    # Saved by the kind's handler to resume a later attempt where this one stopped (opaque JSON).
    checkpoint: dict[str, Any] | None = None
    duplicate_names: list[str] = Field(default_factory=list)  # the file's, when the run started
    status: TaskStatus = TaskStatus.PENDING
    priority: Priority = Priority.NORMAL
    # Attempts started so far; the current attempt number is the fencing
    # token a worker must still hold when it writes its outcome.
    attempts: int = 0
    message_id: str | None = None  # the delivery the current attempt came from
    lease_until: Timestamp | None = None
    model: str | None = None
    model_version: str | None = None
    prompt_version: str | None = None
    usage: TaskUsage = Field(default_factory=TaskUsage)
    result: TaskResult | None = None
    error: dict[str, str] | None = None
    raw_output: str | None = None  # a malformed model answer, for diagnosis
    next_attempt_at: Timestamp | None = None
    started_at: Timestamp | None = None
    finished_at: Timestamp | None = None
    # The latest attempts, oldest first (at most MAX_ATTEMPT_HISTORY).
    history: list[AttemptRecord] = Field(default_factory=list)


# Its name before kinds: document extraction's work item.
ExtractionTask = WorkItem


class Export(Record):
    collection: ClassVar[str] = "exports"

    run_id: str
    job_id: str
    format: ExportFormat
    destination: Destination
    status: ExportStatus = ExportStatus.PENDING
    attempts: int = 0
    external_id: str | None = None  # object name, Drive file id or Gmail message id
    url: str | None = None
    # A signed download link is valid until then; it is handed out as stored until it nears expiry.
    url_expires_at: Timestamp | None = None
    row_count: int | None = None
    failed_count: int | None = None
    error: dict[str, str] | None = None
    finished_at: Timestamp | None = None


class Automation(Record):
    collection: ClassVar[str] = "automations"

    name: str
    enabled: bool = True
    trigger_type: Literal["gmail_attachment"] = "gmail_attachment"
    account: str  # the Gmail address whose mail triggers it
    query: str = "has:attachment"
    job_id: str  # the job template a firing runs
    export: ExportSpec = Field(default_factory=ExportSpec)


class IntegrationStatus(StrEnum):
    CONNECTED = "connected"
    RECONNECT_REQUIRED = "reconnect_required"  # refresh failed or revoked: the user must reconnect
    UNHEALTHY = "unhealthy"  # connected, but a background duty (e.g. Gmail watch) keeps failing
    DISCONNECTED = "disconnected"


class Integration(Record):
    """A user's connected Google account. The refresh token is stored encrypted
    (``token_ciphertext``); it is never logged or returned by the API."""

    collection: ClassVar[str] = "integrations"

    provider: Literal["google"] = "google"
    account: str  # the Google account's e-mail address
    scopes: list[str] = Field(default_factory=list)
    status: IntegrationStatus = IntegrationStatus.CONNECTED
    token_ciphertext: str | None = None
    refresh_failures: int = 0
    status_reason: str | None = None
    # Gmail push (automation): last processed history id and watch expiry.
    history_id: str | None = None
    watch_expires_at: Timestamp | None = None


class Operation(Record):
    """A long-running piece of work the user can poll: a run, an import, an export."""

    collection: ClassVar[str] = "operations"

    kind: Literal["run", "import", "export"]
    target_id: str
    job_id: str | None = None
    status: OperationStatus = OperationStatus.RUNNING
    stage: str = "queued"
    message: str = ""
    pct: float = 0.0
    done: int = 0
    failed: int = 0
    total: int = 0
    eta_seconds: float | None = None
    error: dict[str, str] | None = None
    finished_at: Timestamp | None = None
    # The kind's own figures (an ingest run's pages read, chunks made...), when it declares them.
    counts: dict[str, int] | None = None
    # A continuation: the message (``{"kind", "payload"}``, see
    # ``common.core.messages.continuation``) the operation's final-state writer
    # sends when it completes successfully. Receivers must be idempotent.
    then: dict[str, Any] | None = None

    @computed_field  # type: ignore[prop-decorator]
    @property
    def expire_at(self) -> datetime | None:
        """When the record may go: a day after it became final (None while running).

        Derived from ``finished_at``, so every writer of a final Operation stores
        it without knowing. In the cloud a Firestore TTL policy on ``expire_at``
        deletes the document; the embedded backend's cleanup sweep prunes it.
        """
        if self.finished_at is None or self.status is OperationStatus.RUNNING:
            return None
        return self.finished_at + OPERATION_RETENTION

    @field_serializer("expire_at", when_used="json")
    def _expire_at_json(self, value: datetime | None) -> str | None:
        return None if value is None else format_timestamp(value)


# How long a final Operation is kept (the user polls it; nobody needs it a day later).
OPERATION_RETENTION = timedelta(hours=24)


class AutomationRunStatus(StrEnum):
    IMPORTING = "importing"  # the matching message's attachments are being imported
    RUNNING = "running"  # the import finished; the job's run (then its exports) is under way
    COMPLETED = "completed"  # the run finished and every export completed
    FAILED = "failed"  # a step of the chain failed; ``error`` says which


class AutomationRun(Record):
    """One firing of an automation, for audit: which push and message started it,
    and the import, run and exports it led to.

    Its id derives from (account, Gmail message id, automation id), so a message
    starts at most one chain per automation however often it is seen.
    """

    collection: ClassVar[str] = "automation_runs"

    automation_id: str
    job_id: str
    account: str
    message_ids: list[str]
    # What fired it: the push's history id, and how new messages were found
    # ("history": history.list; "full_sync": the stored history id was too old;
    # "simulate": a saved e-mail fed in locally).
    history_id: str | None = None
    source: Literal["history", "full_sync", "simulate"] = "history"
    note: str | None = None
    export: ExportSpec = Field(default_factory=ExportSpec)  # the automation's export config when it fired
    import_operation_id: str | None = None
    run_id: str | None = None
    export_ids: list[str] = Field(default_factory=list)
    status: AutomationRunStatus = AutomationRunStatus.IMPORTING
    error: dict[str, str] | None = None
    finished_at: Timestamp | None = None


def row_values(result: TaskResult) -> list[dict[str, Scalar]]:
    """A task result's rows as dicts keyed by column name."""
    return [dict(zip(result.columns, row, strict=False)) for row in result.results]


class Budget(Record):
    """A user's own monthly budget, overriding the deployment's (id: the owner id).

    ``monthly_limit`` None: this user has no budget.
    """

    collection: ClassVar[str] = "budgets"

    monthly_limit: float | None = Field(ge=0)
