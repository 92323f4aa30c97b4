"""Cost before and after a run, and the monthly budget that caps it.

- :func:`estimate_run` prices a run that has not started: the job's inputs
  (documents and their page counts) through the kind's estimator.
- :func:`month_spending` is what the owner's runs of this calendar month cost:
  a finished run's actual usage, an open run's estimate (money it may still
  spend is reserved), and a run recorded before runs carried either, derived
  from its tasks.
- :func:`check_budget` refuses a run that would take that past the budget
  (:class:`BudgetExceeded`, with what is left).

Page counts are read once per file (a cheap count of the PDF's page tree) and
recorded on the file, so later estimates read only records.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from common.core import cost
from common.core.errors import PermanentError
from common.core.models import Budget, ExtractionTask, FileType, Job, Run, SourceFile, format_timestamp
from common.core.states import FileStatus, RunStatus, TaskStatus
from common.ports.store import Filter, Transaction
from common.service import repo
from common.service.context import Deps

log = logging.getLogger(__name__)

# Runs still able to spend money: their estimate is reserved until they finish.
_OPEN_RUNS = frozenset({RunStatus.PENDING, RunStatus.RUNNING, RunStatus.PAUSED})
_FINISHED_TASKS = [TaskStatus.COMPLETED.value, TaskStatus.FAILED.value]


class BudgetExceeded(PermanentError):
    """The run would take the owner's spending this month past their budget."""

    def __init__(self, check: cost.BudgetCheck, estimate: cost.Estimate) -> None:
        remaining = max(check.remaining or 0.0, 0.0)
        super().__init__(
            f"this run is expected to cost {estimate.cost:.4f} {check.currency}, but only {remaining:.4f} of the"
            f" monthly budget of {check.limit:.2f} {check.currency} is left ({check.spent:.4f} spent this month)",
            code="budget_exceeded",
            hint="Wait for next month, run fewer documents or a cheaper model, or ask an operator for more budget.",
        )
        self.check = check
        self.estimate = estimate


class PriceMissing(PermanentError):
    """The run's model has no price: its cost cannot be estimated or capped."""

    def __init__(self, message: str) -> None:
        super().__init__(
            message, code="unknown_model_price", hint="Add the model to SLUICE_PRICES (USD per million tokens)."
        )


def model_for(deps: Deps, job: Job) -> str:
    """The model a run of ``job`` would call: the Gemini model, or the offline extractor's name."""
    extractor = (job.settings.extractor or deps.settings.extractor).value
    return deps.settings.gemini_model if extractor == "gemini" else extractor


def run_inputs(deps: Deps, job: Job) -> list[SourceFile]:
    """The documents a run of ``job`` would fan out to (the same selection as the fan-out)."""
    return list(
        repo.scan(
            deps.store,
            SourceFile,
            filters=[
                Filter("job_id", "==", job.id),
                Filter("status", "==", FileStatus.UPLOADED.value),
                Filter("file_type", "==", FileType.DOCUMENT.value),
            ],
        )
    )


def estimate_run(
    deps: Deps, job: Job, *, estimator: cost.Estimator = cost.estimate_documents, count_pages: bool = True
) -> cost.Estimate:
    """The expected items, tokens and money of a run of ``job`` started now.

    ``count_pages``: count the pages of documents not counted yet (reads their
    bytes once); else their pages are guessed from their size.
    """
    inputs = run_inputs(deps, job)
    if count_pages:
        inputs = [_with_pages(deps, f) for f in inputs]
    settings = cost.CostSettings(model=model_for(deps, job), prices=deps.settings.price_table())
    try:
        return estimator(job, inputs, settings)
    except cost.UnknownModel as exc:
        raise PriceMissing(str(exc)) from exc


def _with_pages(deps: Deps, f: SourceFile) -> SourceFile:
    if f.pages is not None or f.blob_uri is None:
        return f
    from common.extraction.pdfio import page_count

    try:
        data = deps.blobs.get_bytes(f.blob_uri, max_bytes=deps.settings.max_document_bytes)
    except Exception as exc:  # noqa: BLE001 - an estimate never fails on one unreadable file: it guesses from size
        log.info("page count skipped", extra={"file_id": f.id, "error": type(exc).__name__})
        return f
    pages = page_count(data)
    if pages is None:
        return f
    deps.store.update(SourceFile.collection, f.id, {"pages": pages})
    return f.model_copy(update={"pages": pages})


def budget_limit(deps: Deps, owner: str) -> float | None:
    """The owner's monthly budget: their Budget record, else the deployment's (0: none)."""
    found = repo.get(deps.store, Budget, owner)
    if found is not None:
        return found[0].monthly_limit
    return deps.settings.monthly_budget or None


def run_usage(deps: Deps, run: Run) -> cost.Usage:
    """What the run's items used: recorded when it completed, else summed from its tasks now."""
    if run.usage is not None and run.status not in _OPEN_RUNS:
        return run.usage
    return tasks_usage(deps, run.id) + steps_usage(deps, run)


def steps_usage(deps: Deps, run: Run) -> cost.Usage:
    """What the run's plan and finish spent on models (saved on the run with each step's outcome)."""
    return cost.usage_of_steps(run.step_usage, deps.settings.price_table())


def tasks_usage(deps: Deps, run_id: str) -> cost.Usage:
    """The run's finished items' usage, summed now (a failed item may have used tokens too)."""
    tasks = repo.scan(
        deps.store,
        ExtractionTask,
        filters=[Filter("run_id", "==", run_id), Filter("status", "in", _FINISHED_TASKS)],
    )
    return cost.usage_of_tasks(tasks, deps.settings.price_table())


def runs_since(deps: Deps, owners: Sequence[str], since: datetime) -> list[Run]:
    owner = Filter("owner", "==", owners[0]) if len(owners) == 1 else Filter("owner", "in", list(owners))
    return list(repo.scan(deps.store, Run, filters=[owner, Filter("created_at", ">=", format_timestamp(since))]))


def month_spending(deps: Deps, owners: Sequence[str]) -> float:
    """This calendar month's spending: actual cost of finished runs, the estimate of open ones."""
    spent = 0.0
    for run in runs_since(deps, owners, cost.month_start(deps.clock.now())):
        if run.status in _OPEN_RUNS and run.estimate is not None:
            spent += run.estimate.cost
        else:
            spent += run_usage(deps, run).cost
    return round(spent, 6)


def budget_check(deps: Deps, owners: Sequence[str], estimate: cost.Estimate) -> cost.BudgetCheck:
    return cost.check_budget(
        limit=budget_limit(deps, owners[0]), spent=month_spending(deps, owners), estimate=estimate.cost
    )


# One document per owner that every budgeted run start reads and writes in its
# transaction: two starts racing at the edge of the budget conflict there, and
# the one that retries counts the other's committed run before deciding.
BUDGET_GATES = "budget_gates"


@dataclass(frozen=True)
class BudgetedEstimate:
    """A run's estimate and the limit it must fit (None: nothing to refuse)."""

    estimate: cost.Estimate
    limit: float | None

    @property
    def checked(self) -> bool:
        return self.limit is not None and self.estimate.cost > 0


def budget_estimate(deps: Deps, job: Job) -> BudgetedEstimate:
    """The run's estimate (counting pages only for a priced model) and the owner's limit; no decision yet."""
    price = cost.price_of(deps.settings.price_table(), model_for(deps, job))
    # A free model (the offline extractor) needs no page count: nothing to refuse.
    estimate = estimate_run(deps, job, count_pages=price is not None and not cost.is_free(price))
    return BudgetedEstimate(estimate, budget_limit(deps, job.owner))


def tx_require_budget(t: Transaction, deps: Deps, owner: str, budgeted: BudgetedEstimate) -> None:
    """Inside the run-start transaction: BudgetExceeded unless the run fits what is left.

    It reads the owner's gate before summing the month's spending and writes it
    after, so of two starts racing past the budget one commits first and the
    other's transaction conflicts, runs again and sees that run. Call it before
    the transaction's first write (Firestore reads everything before writing).
    """
    if not budgeted.checked:
        return
    t.get(BUDGET_GATES, owner)
    check = cost.check_budget(
        limit=budgeted.limit, spent=month_spending(deps, [owner]), estimate=budgeted.estimate.cost
    )
    if not check.allowed:
        raise BudgetExceeded(check, budgeted.estimate)
    t.set(BUDGET_GATES, owner, {"owner": owner, "at": format_timestamp(deps.clock.now())})


def set_budget(deps: Deps, owner: str, monthly_limit: float | None) -> Budget:
    now = deps.clock.now()
    found = repo.get(deps.store, Budget, owner)
    created = found[0].created_at if found else now
    budget = Budget(id=owner, owner=owner, monthly_limit=monthly_limit, created_at=created, updated_at=now)
    deps.store.set(Budget.collection, owner, budget.to_doc())
    return budget
