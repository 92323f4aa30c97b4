"""Job kinds: what a job does, declared in one small module per kind.

A kind declares only what is its own (:class:`Kind`): its settings model, how
a run fans out into work items (a pure function), the handler of one item,
the fan-in that makes the run's outputs, the unit its progress counts, and the
model, quota and Cloud Function it uses. The platform does the rest for every
kind (``common.service.runs`` and friends): run numbering, work-item records
with attempts, history and checkpoints, exactly-once fan-in, progress,
pause/resume/cancel/retry, priorities and schedules, per-user limits
(``queued``), the model's rate limiter and circuit breaker, run timeouts,
stalled-item recovery, dead letters.

Kinds are found by name (:func:`get`). ``extract`` is built in; others are
modules named in ``SLUICE_KINDS`` (comma-separated), each calling
:func:`register` when imported. docs/JOB_KINDS.md shows how to add one.
"""

from __future__ import annotations

import importlib
import os
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ValidationError

from common.core import messages
from common.core.errors import PermanentError, SluiceError
from common.core.messages import ExtractTask, FinishRun, Message, StartRun
from common.core.models import Job, Run, SourceFile, StepSpend, TaskResult, TaskUsage, WorkItem

if TYPE_CHECKING:
    from common.config import Settings
    from common.service.context import Context, Deps

BUILTIN = {
    "extract": "common.kinds.extract",
    "audit": "common.kinds.audit",
    "enrich": "common.kinds.enrich",
    "ingest": "common.kinds.ingest",
    "research": "common.kinds.research",
}
ENV = "SLUICE_KINDS"


@dataclass(frozen=True)
class ItemSpec:
    """One work item a run fans out into: ``key`` is unique within the run (the item's id derives from it)."""

    key: str
    name: str
    params: dict[str, Any] = field(default_factory=dict)
    duplicate_names: tuple[str, ...] = ()


@dataclass(frozen=True)
class ItemDone:
    """A handled item's outcome: its rows (``result``) and what it cost."""

    result: TaskResult
    usage: TaskUsage = field(default_factory=TaskUsage)
    model: str | None = None
    model_version: str | None = None
    prompt_version: str | None = None


@dataclass(frozen=True)
class Estimate:
    """What a run is expected to take, before it starts (for cost estimates and budgets)."""

    items: int
    input_tokens: int = 0
    output_tokens: int = 0
    pages: int = 0


@dataclass
class ItemCall:
    """What a kind's handler is given for one attempt at one item."""

    ctx: Context
    item: WorkItem
    job: Job  # as the run froze it
    run: Run
    settings: BaseModel  # the kind's settings, validated
    attempt: int
    save_checkpoint: Callable[[dict[str, Any]], None]

    @property
    def checkpoint(self) -> dict[str, Any] | None:
        """What an earlier attempt saved (None: start from the beginning)."""
        return self.item.checkpoint


@dataclass
class StepCall:
    """What a kind's effectful run step (``plan`` or ``finish``) is given for one attempt.

    ``items``: the run's work items, all terminal (``finish`` only; empty for ``plan``).
    """

    ctx: Context
    job: Job  # as the run froze it
    run: Run
    settings: BaseModel
    attempt: int
    items: list[WorkItem] = field(default_factory=list)
    # What this attempt spent on models (see ``spent``): saved with the step's outcome and priced into the run's cost.
    spends: list[StepSpend] = field(default_factory=list)

    def spent(self, step: str, model: str | None, usage: TaskUsage) -> None:
        """Record tokens this step spent on ``model`` (a step calling no model records nothing)."""
        self.spends.append(
            StepSpend(
                step=step, model=model, input_tokens=usage.input_tokens or 0, output_tokens=usage.output_tokens or 0
            )
        )


FanOut = Callable[[Job, Sequence[SourceFile], Any], list[ItemSpec]]
# Effectful steps: errors are returned classified (RetryableError: retried by the policy), never raised.
Plan = Callable[[StepCall], "list[ItemSpec] | SluiceError"]
Finish = Callable[[StepCall], "dict[str, Any] | SluiceError"]
Handle = Callable[[ItemCall], "ItemDone | SluiceError"]
FanIn = Callable[[Run, Iterable[WorkItem]], dict[str, Any]]
EstimateFn = Callable[[Job, Sequence[SourceFile], Any], Estimate]
# Before a job is created: check what it needs (its model, its source) and return its settings resolved.
Prepare = Callable[["Deps", str, Any], BaseModel]


@dataclass(frozen=True)
class Kind:
    """A job kind's declaration. See docs/JOB_KINDS.md."""

    name: str
    settings_model: type[BaseModel]
    # Pure: the run's work items from the job, its inputs (uploaded documents) and settings.
    fan_out: FanOut
    # One attempt at one item: its outcome, or the error that ended it (classified, never raised).
    handle: Handle
    # The Cloud Function (topology.yaml) that runs this kind's start and items.
    function: str
    unit: str = "items"  # what progress counts: documents, rows, chunks, sections...
    # An item's progress in ``unit``, (done, total), shown per item by the API and console (None: not measured).
    item_units: Callable[[WorkItem], tuple[int, int] | None] | None = None
    # Pure: the run's outputs from its terminal items, stored on the run by the fan-in that completes it.
    fan_in: FanIn | None = None
    # The model the items call (None: the deployment's) and the quota / circuit they share.
    model: str | None = None
    quota: str | None = None
    # The circuit breaker an item waits on before starting (None: none).
    circuit: Callable[[Context, Job], str | None] | None = None
    # Seconds until the model's quota has room for another item, its turn booked (None: go now):
    # asked before an item is claimed, so an item the quota would turn away costs no writes.
    pacing: Callable[[Context, Job], float | None] | None = None
    estimate: EstimateFn | None = None
    # Past this, a run fails with ``run_timeout`` (None: no timeout; SLUICE_RUN_TIMEOUTS overrides per kind).
    run_timeout_s: float | None = None
    # How long one attempt holds an item (None: SLUICE_TASK_LEASE_S). Past it the item is dispatched again.
    item_lease_s: float | None = None
    # Whether runs fan out over the job's uploaded documents (False: the settings say what to work on).
    uses_uploads: bool = True
    # Run when a job of this kind is created (API, CLI): a SluiceError here means the job is not created.
    prepare: Prepare | None = None
    # Whether a user creates jobs of this kind (False: the platform makes them, e.g. a collection's ingest job).
    user_created: bool = True
    # How many runs of this kind one owner may have working at once (None: no limit of its own);
    # items of further runs wait ``queued`` (as under SLUICE_MAX_RUNNING_TASKS_PER_USER).
    runs_per_user: Callable[[Settings], int] | None = None
    # Its own figures (pages read, chunks made...): each completed item records them in ``result.figures``;
    # a run's progress carries their totals over its completed items (a store aggregation, no item read).
    figures: tuple[str, ...] = ()
    # Effectful (a model call, say), instead of ``fan_out``: the run's items, made in its start
    # handler (phase "planning") and saved on the run once; a redelivered start reuses them.
    plan: Plan | None = None
    # Effectful, after every item is terminal (phase "writing"), as its own message
    # ``<kind>.finish``: outputs saved on the run once (with the fan-in's), then the run completes.
    finish: Finish | None = None
    # Message kinds of its run start and its items; extract keeps run.start / task.extract.
    start_message: str = ""
    item_message: str = ""
    start_type: type[StartRun] = field(init=False, repr=False, compare=False)
    item_type: type[ExtractTask] = field(init=False, repr=False, compare=False)
    # ``<kind>.finish`` when the kind has a finish step ("": none).
    finish_message: str = field(init=False, repr=False, compare=False, default="")
    finish_type: type[FinishRun] | None = field(init=False, repr=False, compare=False, default=None)

    def __post_init__(self) -> None:
        start = self.start_message or f"{self.name}.start"
        item = self.item_message or f"{self.name}.item"
        object.__setattr__(self, "start_message", start)
        object.__setattr__(self, "item_message", item)
        object.__setattr__(self, "start_type", _message_type(StartRun, start))
        object.__setattr__(self, "item_type", _message_type(ExtractTask, item))
        if self.finish is not None:
            object.__setattr__(self, "finish_message", f"{self.name}.finish")
            object.__setattr__(self, "finish_type", _message_type(FinishRun, self.finish_message))

    def validate_settings(self, raw: dict[str, Any] | None) -> BaseModel:
        """The kind's settings from ``raw`` (PermanentError ``invalid_settings`` if they do not validate)."""
        try:
            return self.settings_model.model_validate(raw or {})
        except ValidationError as exc:
            raise PermanentError(
                f"invalid settings for kind {self.name!r}: {exc.errors(include_url=False)}",
                code="invalid_settings",
                hint=f"See the {self.name} kind's settings in docs/openapi.json.",
            ) from exc

    def start(self, run: Run) -> Message:
        return self.start_type(run_id=run.id, job_id=run.job_id)

    def item(self, item: WorkItem) -> Message:
        return self.item_type(task_id=item.id, run_id=item.run_id, job_id=item.job_id)

    def finish_of(self, run: Run) -> Message:
        """The run's ``<kind>.finish`` message (the kind must have a finish step)."""
        if self.finish_type is None:
            raise ValueError(f"kind {self.name!r} has no finish step")
        return self.finish_type(run_id=run.id, job_id=run.job_id)


def _message_type(base: type[StartRun] | type[ExtractTask] | type[FinishRun], kind: str) -> Any:
    if base.kind == kind:
        return base
    known = messages.MESSAGE_TYPES.get(kind)
    if known is not None and issubclass(known, base):
        return known
    name = "".join(p.capitalize() for p in kind.replace(".", "_").split("_"))
    cls = type(name, (base,), {"kind": kind, "__module__": __name__})
    messages.register(cls)
    return cls


_KINDS: dict[str, Kind] = {}
_lock = threading.Lock()
_loaded = False


def register(kind: Kind) -> Kind:
    """Add a kind (idempotent for the same declaration); a kind module calls it when imported."""
    with _lock:
        known = _KINDS.get(kind.name)
        if known is not None and known is not kind and known.function != kind.function:
            raise ValueError(f"kind {kind.name!r} is already registered")
        _KINDS[kind.name] = kind
    return kind


def load(modules: Iterable[str] | None = None) -> None:
    """Import the built-in kinds and the ones named in SLUICE_KINDS (once per process)."""
    global _loaded
    if _loaded and modules is None:
        return
    names = list(BUILTIN.values())
    names += [m.strip() for m in (os.environ.get(ENV, "") if modules is None else ",".join(modules)).split(",")]
    for module in filter(None, names):
        importlib.import_module(module)
    _loaded = True


def get(name: str) -> Kind:
    """The kind called ``name`` (PermanentError ``unknown_kind`` if there is none)."""
    found = _KINDS.get(name)
    if found is None:
        load()
        found = _KINDS.get(name)
    if found is None:
        raise PermanentError(
            f"unknown job kind {name!r}; known: {', '.join(names())}",
            code="unknown_kind",
            hint=f"Kinds are built in or named in {ENV}.",
        )
    return found


def names() -> list[str]:
    load()
    return sorted(_KINDS)


def by_message(message_kind: str) -> Kind | None:
    """The kind whose start, item or finish message is ``message_kind`` (None: no kind's)."""
    load()
    for kind in _KINDS.values():
        if message_kind and message_kind in (kind.start_message, kind.item_message, kind.finish_message):
            return kind
    return None


def handlers() -> dict[str, dict[str, str]]:
    """Each kind's function's handlers, for the handler registry."""
    load()
    table: dict[str, dict[str, str]] = {}
    for kind in _KINDS.values():
        table.setdefault(kind.function, {}).update(
            {kind.start_message: "common.service.runs:fan_out_run", kind.item_message: "common.service.runs:run_item"}
        )
        if kind.finish_message:
            table[kind.function][kind.finish_message] = "common.service.steps:finish_run"
    return table
