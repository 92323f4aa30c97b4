"""Cost before and after a run: the price table, estimates, actual usage, budgets.

Pure functions over records and a price table; the service reads what they
need (files' page counts, the month's runs) and passes it in.

A kind supplies its own estimate with the :data:`Estimator` signature
``estimate(job, inputs, settings) -> Estimate``; :func:`estimate_documents` is
document extraction's (one item per document, tokens per page).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Final, Protocol

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:  # the records carry these models: a runtime import would be a cycle
    from common.core.models import ExtractionTask, Job, SourceFile, StepSpend

CURRENCY: Final = "USD"


class ModelPrice(BaseModel):
    """What one model costs, and what an estimate assumes about it.

    Prices in USD: per million input and output tokens, and per page (for
    models billed by the page). The ``*_tokens_per_*`` figures are the
    estimate's assumptions, not prices: Gemini counts a PDF page as 258 input
    tokens; the prompt (instructions and the field list) adds about 400 per
    document; an answer takes about 200 output tokens per page (more with
    many fields or a thinking model: tune it from runs' actual usage).
    """

    model_config = ConfigDict(frozen=True)

    input_per_million: float = Field(default=0.0, ge=0)
    output_per_million: float = Field(default=0.0, ge=0)
    per_page: float = Field(default=0.0, ge=0)
    input_tokens_per_page: int = Field(default=258, ge=0)
    input_tokens_per_document: int = Field(default=400, ge=0)
    output_tokens_per_page: int = Field(default=200, ge=0)


_FREE: Final = ModelPrice(input_tokens_per_page=0, input_tokens_per_document=0, output_tokens_per_page=0)

# Vertex AI list prices (USD, standard tier, prompts up to 200k tokens) as
# published in 2025; set SLUICE_PRICES for your contract. The offline
# extractor calls no model: it costs nothing and uses no tokens.
DEFAULT_PRICES: Final[dict[str, ModelPrice]] = {
    "gemini-2.5-pro": ModelPrice(input_per_million=1.25, output_per_million=10.0),
    "gemini-2.5-flash": ModelPrice(input_per_million=0.30, output_per_million=2.50),
    "gemini-2.5-flash-lite": ModelPrice(input_per_million=0.10, output_per_million=0.40),
    "gemini-2.0-flash": ModelPrice(input_per_million=0.15, output_per_million=0.60),
    "gemini-2.0-flash-lite": ModelPrice(input_per_million=0.075, output_per_million=0.30),
    "offline": _FREE,
}

# A document whose page count is not known yet is guessed from its size.
BYTES_PER_PAGE: Final = 100_000


class CostSettings(BaseModel):
    """What an estimate needs besides the job and its inputs."""

    model_config = ConfigDict(frozen=True)

    model: str = Field(description="The model a run of this job would call")
    prices: dict[str, ModelPrice]


class Estimate(BaseModel):
    """The expected work and money of a run that has not started."""

    model: str
    items: int = Field(description="Work items the run would fan out to (documents for extract)")
    pages: int
    input_tokens: int
    output_tokens: int
    cost: float = Field(description="Expected money, in currency")
    currency: str = CURRENCY
    assumptions: list[str] = Field(default_factory=list, description="What the figures rest on")


class Usage(BaseModel):
    """What a run (or a set of runs) actually used: summed over its items."""

    input_tokens: int = 0
    output_tokens: int = 0
    pages: int = 0
    cost: float = 0.0
    currency: str = CURRENCY

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            input_tokens=self.input_tokens + other.input_tokens,
            output_tokens=self.output_tokens + other.output_tokens,
            pages=self.pages + other.pages,
            cost=round(self.cost + other.cost, 6),
            currency=self.currency,
        )


class Estimator(Protocol):
    """A kind's estimate hook: the job, the inputs a run would take, the model and prices."""

    def __call__(self, job: Job, inputs: Sequence[SourceFile], settings: CostSettings) -> Estimate: ...


def price_of(prices: dict[str, ModelPrice], model: str | None) -> ModelPrice | None:
    """The model's price; a versioned name (``gemini-2.5-flash-001``) takes its family's. None: unknown."""
    if not model:
        return None
    if model in prices:
        return prices[model]
    family = max((name for name in prices if model.startswith(name)), key=len, default=None)
    return None if family is None else prices[family]


def is_free(price: ModelPrice) -> bool:
    return price.input_per_million == 0 and price.output_per_million == 0 and price.per_page == 0


def cost_of(price: ModelPrice, *, input_tokens: int, output_tokens: int, pages: int) -> float:
    money = (
        input_tokens * price.input_per_million / 1e6
        + output_tokens * price.output_per_million / 1e6
        + pages * price.per_page
    )
    return round(money, 6)


def estimate_documents(job: Job, inputs: Sequence[SourceFile], settings: CostSettings) -> Estimate:
    """Document extraction's estimate: one item per document, its pages from the
    file record (or guessed from its size), tokens per page from the price table."""
    del job  # every document of the job is read the same way
    price = price_of(settings.prices, settings.model)
    assumptions: list[str] = []
    if price is None:
        raise UnknownModel(settings.model, sorted(settings.prices))
    pages = 0
    guessed = 0
    for f in inputs:
        if f.pages is not None:
            pages += f.pages
        else:
            guessed += 1
            pages += max(1, -(-(f.size or 0) // BYTES_PER_PAGE))
    if guessed:
        assumptions.append(f"{guessed} document(s) of unknown length counted as one page per {BYTES_PER_PAGE} bytes")
    input_tokens = pages * price.input_tokens_per_page + len(inputs) * price.input_tokens_per_document
    output_tokens = pages * price.output_tokens_per_page
    if input_tokens or output_tokens:
        assumptions.append(
            f"{price.input_tokens_per_page} input tokens per page, {price.input_tokens_per_document} per document"
            f" for the prompt, {price.output_tokens_per_page} output tokens per page"
        )
    return Estimate(
        model=settings.model,
        items=len(inputs),
        pages=pages,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cost=cost_of(price, input_tokens=input_tokens, output_tokens=output_tokens, pages=pages),
        assumptions=assumptions,
    )


class UnknownModel(ValueError):
    def __init__(self, model: str, known: list[str]) -> None:
        super().__init__(f"no price for model {model!r}; the price table knows {', '.join(known)}")
        self.model = model


def usage_of_tasks(tasks: Iterable[ExtractionTask], prices: dict[str, ModelPrice]) -> Usage:
    """Actual usage: each item's reported tokens and pages, priced by the model it called.

    An item whose model has no price counts its tokens at no money (the table
    lacks it, which the configuration check reports; the tokens stay visible).
    """
    total = Usage()
    for task in tasks:
        input_tokens = task.usage.input_tokens or 0
        output_tokens = task.usage.output_tokens or 0
        pages = task.result.pages if task.result is not None else 0
        price = price_of(prices, task.model)
        money = (
            0.0
            if price is None
            else cost_of(price, input_tokens=input_tokens, output_tokens=output_tokens, pages=pages)
        )
        total = total + Usage(input_tokens=input_tokens, output_tokens=output_tokens, pages=pages, cost=money)
    return total


def usage_of_steps(spends: Iterable[StepSpend], prices: dict[str, ModelPrice]) -> Usage:
    """Actual usage of a run's effectful steps (plan, finish), priced by the model each called."""
    total = Usage()
    for spend in spends:
        price = price_of(prices, spend.model)
        money = (
            0.0
            if price is None
            else cost_of(price, input_tokens=spend.input_tokens, output_tokens=spend.output_tokens, pages=0)
        )
        total = total + Usage(input_tokens=spend.input_tokens, output_tokens=spend.output_tokens, cost=money)
    return total


def month_start(now: datetime) -> datetime:
    """The start of ``now``'s calendar month, in UTC: budgets are per calendar month."""
    utc = now.astimezone(UTC)
    return utc.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


class BudgetCheck(BaseModel):
    """A run's estimate against the owner's monthly budget."""

    limit: float | None = Field(description="The monthly budget (None: no budget)")
    spent: float = Field(description="This month's runs: actual cost, or the estimate while a run is open")
    remaining: float | None
    estimate: float
    allowed: bool
    currency: str = CURRENCY


def check_budget(*, limit: float | None, spent: float, estimate: float) -> BudgetCheck:
    """A run is refused when it would take this month's spending past the budget.

    A run expected to cost nothing is never refused, whatever was spent.
    """
    if limit is None:
        return BudgetCheck(limit=None, spent=spent, remaining=None, estimate=estimate, allowed=True)
    remaining = round(limit - spent, 6)
    allowed = estimate <= 0 or estimate <= remaining
    return BudgetCheck(limit=limit, spent=spent, remaining=remaining, estimate=estimate, allowed=allowed)
