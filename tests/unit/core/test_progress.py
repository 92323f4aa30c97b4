"""Progress percentage, linear ETA, and write coalescing."""

from __future__ import annotations

from datetime import datetime

import pytest

from common.core.progress import compute_progress, should_write
from tests.unit.core.conftest import T0, at


@pytest.mark.parametrize(
    ("completed", "failed", "total", "pct"),
    [
        pytest.param(0, 0, 10, 0.0, id="nothing-done"),
        pytest.param(1, 0, 3, 33.3, id="rounded-to-one-decimal"),
        pytest.param(2, 1, 4, 75.0, id="failures-count-as-done"),
        pytest.param(0, 4, 4, 100.0, id="all-failed"),
        pytest.param(10, 0, 10, 100.0, id="all-completed"),
        pytest.param(12, 0, 10, 100.0, id="overcount-capped"),
        pytest.param(0, 0, 0, 100.0, id="zero-total-is-complete"),
    ],
)
def test_pct_is_the_share_of_work_in_a_terminal_state(completed: int, failed: int, total: int, pct: float) -> None:
    progress = compute_progress(completed=completed, failed=failed, total=total, started_at=T0, now=at(10))
    assert progress.pct == pct


def test_progress_reports_the_counts_it_was_given() -> None:
    progress = compute_progress(completed=3, failed=2, total=9, started_at=T0, now=at(10))
    assert (progress.done, progress.failed, progress.total) == (3, 2, 9)


@pytest.mark.parametrize(
    ("completed", "failed", "total", "elapsed", "eta"),
    [
        pytest.param(2, 0, 10, 60, 240.0, id="a-fifth-in-a-minute"),
        pytest.param(1, 1, 4, 30, 30.0, id="failures-count"),
        pytest.param(1, 0, 3, 10, 20.0, id="one-of-three"),
        pytest.param(3, 0, 7, 10, 13.3, id="rounded-to-one-decimal"),
    ],
)
def test_eta_extrapolates_the_elapsed_time_linearly(
    completed: int, failed: int, total: int, elapsed: float, eta: float
) -> None:
    progress = compute_progress(completed=completed, failed=failed, total=total, started_at=T0, now=at(elapsed))
    assert progress.eta_seconds == eta


def test_eta_is_unknown_before_anything_finished() -> None:
    assert compute_progress(completed=0, failed=0, total=5, started_at=T0, now=at(60)).eta_seconds is None


def test_eta_is_unknown_without_a_start_time() -> None:
    assert compute_progress(completed=2, failed=0, total=5, started_at=None, now=at(60)).eta_seconds is None


@pytest.mark.parametrize("started_at", [T0, None])
def test_eta_is_zero_once_everything_finished(started_at: datetime | None) -> None:
    progress = compute_progress(completed=4, failed=1, total=5, started_at=started_at, now=at(60))
    assert progress.eta_seconds == 0.0


def test_final_state_is_always_written() -> None:
    assert should_write(T0, T0, final=True) is True


def test_first_write_happens_at_once() -> None:
    assert should_write(None, T0, final=False) is True


@pytest.mark.parametrize(
    ("since_last", "writes"),
    [
        pytest.param(0.0, False, id="same-instant"),
        pytest.param(0.999, False, id="just-before-interval"),
        pytest.param(1.0, True, id="exactly-the-interval"),
        pytest.param(5.0, True, id="well-after"),
    ],
)
def test_non_final_write_waits_for_the_minimum_interval(since_last: float, writes: bool) -> None:
    assert should_write(T0, at(since_last), final=False) is writes


@pytest.mark.parametrize(("since_last", "writes"), [(4.9, False), (5.0, True)])
def test_minimum_interval_is_configurable(since_last: float, writes: bool) -> None:
    assert should_write(T0, at(since_last), final=False, min_interval_s=5) is writes
