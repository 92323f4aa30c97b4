"""The cost core: prices, estimates, actual usage and the budget rule."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from common.core import cost
from common.core.models import ExtractionTask, Job, SourceFile, SourceType, TaskResult, TaskUsage

NOW = datetime(2026, 3, 17, 12, 30, tzinfo=UTC)
FLASH = cost.DEFAULT_PRICES["gemini-2.5-flash"]


def _job() -> Job:
    return Job(id="job_1", owner="alice", name="j", fields=[], created_at=NOW, updated_at=NOW)


def _file(name: str, *, pages: int | None = None, size: int | None = None) -> SourceFile:
    return SourceFile(
        id=f"file_{name}",
        owner="alice",
        job_id="job_1",
        source_type=SourceType.UPLOAD,
        external_id=name,
        name=name,
        size=size,
        pages=pages,
        created_at=NOW,
        updated_at=NOW,
    )


def _task(model: str | None, tokens_in: int, tokens_out: int, pages: int) -> ExtractionTask:
    return ExtractionTask(
        id=f"task_{model}_{tokens_in}",
        owner="alice",
        run_id="run_1",
        job_id="job_1",
        file_id="f",
        file_name="f.pdf",
        model=model,
        usage=TaskUsage(input_tokens=tokens_in, output_tokens=tokens_out),
        result=TaskResult(columns=[], results=[], method="m", pages=pages),
        created_at=NOW,
        updated_at=NOW,
    )


def test_an_estimate_prices_each_page_and_each_documents_prompt() -> None:
    settings = cost.CostSettings(model="gemini-2.5-flash", prices=cost.DEFAULT_PRICES)
    estimate = cost.estimate_documents(_job(), [_file("a", pages=3), _file("b", pages=2)], settings)
    assert (estimate.items, estimate.pages) == (2, 5)
    assert estimate.input_tokens == 5 * FLASH.input_tokens_per_page + 2 * FLASH.input_tokens_per_document
    assert estimate.output_tokens == 5 * FLASH.output_tokens_per_page
    expected = estimate.input_tokens * 0.30 / 1e6 + estimate.output_tokens * 2.50 / 1e6
    assert estimate.cost == pytest.approx(expected)
    assert estimate.cost > 0


def test_a_document_of_unknown_length_is_guessed_from_its_size_and_says_so() -> None:
    settings = cost.CostSettings(model="gemini-2.5-flash", prices=cost.DEFAULT_PRICES)
    big = _file("big", size=3 * cost.BYTES_PER_PAGE + 1)
    estimate = cost.estimate_documents(_job(), [big, _file("tiny", size=10)], settings)
    assert estimate.pages == 4 + 1
    assert any("unknown length" in note for note in estimate.assumptions)


def test_the_offline_extractor_costs_nothing_and_uses_no_tokens() -> None:
    settings = cost.CostSettings(model="offline", prices=cost.DEFAULT_PRICES)
    estimate = cost.estimate_documents(_job(), [_file("a", pages=40)], settings)
    assert (estimate.cost, estimate.input_tokens, estimate.output_tokens, estimate.pages) == (0, 0, 0, 40)


def test_a_model_without_a_price_cannot_be_estimated() -> None:
    settings = cost.CostSettings(model="mystery-1", prices=cost.DEFAULT_PRICES)
    with pytest.raises(cost.UnknownModel, match="mystery-1"):
        cost.estimate_documents(_job(), [_file("a", pages=1)], settings)


def test_a_versioned_model_name_takes_its_familys_price_and_the_longest_family_wins() -> None:
    assert cost.price_of(cost.DEFAULT_PRICES, "gemini-2.5-flash-001") == FLASH
    assert (
        cost.price_of(cost.DEFAULT_PRICES, "gemini-2.5-flash-lite-002") == cost.DEFAULT_PRICES["gemini-2.5-flash-lite"]
    )
    assert cost.price_of(cost.DEFAULT_PRICES, "claude") is None
    assert cost.price_of(cost.DEFAULT_PRICES, None) is None


def test_actual_usage_prices_each_item_by_the_model_it_called() -> None:
    tasks = [_task("gemini-2.5-flash", 1000, 200, 2), _task("gemini-2.5-pro", 2000, 100, 1), _task("offline", 0, 0, 5)]
    usage = cost.usage_of_tasks(tasks, cost.DEFAULT_PRICES)
    assert (usage.input_tokens, usage.output_tokens, usage.pages) == (3000, 300, 8)
    flash = 1000 * 0.30 / 1e6 + 200 * 2.50 / 1e6
    pro = 2000 * 1.25 / 1e6 + 100 * 10.0 / 1e6
    assert usage.cost == pytest.approx(flash + pro)


def test_an_item_whose_model_has_no_price_keeps_its_tokens_at_no_money() -> None:
    usage = cost.usage_of_tasks([_task("mystery-1", 500, 50, 1)], cost.DEFAULT_PRICES)
    assert (usage.input_tokens, usage.cost) == (500, 0)


def test_per_page_prices_are_charged_per_page() -> None:
    price = cost.ModelPrice(per_page=0.01)
    assert cost.cost_of(price, input_tokens=10**6, output_tokens=0, pages=7) == pytest.approx(0.07)


def test_a_run_that_fits_the_budget_is_allowed_and_one_that_does_not_is_refused() -> None:
    assert cost.check_budget(limit=10.0, spent=9.0, estimate=1.0).allowed
    refused = cost.check_budget(limit=10.0, spent=9.0, estimate=1.5)
    assert not refused.allowed and refused.remaining == pytest.approx(1.0)


def test_a_free_run_is_never_refused_and_no_budget_refuses_nothing() -> None:
    assert cost.check_budget(limit=1.0, spent=5.0, estimate=0.0).allowed
    unlimited = cost.check_budget(limit=None, spent=1e9, estimate=1e9)
    assert unlimited.allowed and unlimited.remaining is None


def test_the_budget_month_starts_on_the_first_at_midnight_utc() -> None:
    assert cost.month_start(NOW) == datetime(2026, 3, 1, tzinfo=UTC)
    # 00:30 on April 1st in Berlin is still March in UTC.
    berlin = datetime(2026, 4, 1, 0, 30, tzinfo=timezone(timedelta(hours=2)))
    assert cost.month_start(berlin) == datetime(2026, 3, 1, tzinfo=UTC)
