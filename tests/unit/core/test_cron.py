"""Five-field cron expressions: parsing and the next matching minute."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from common.core.cron import Cron


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


# -- parsing ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "expr",
    [
        pytest.param("", id="empty"),
        pytest.param("* * * *", id="four-fields"),
        pytest.param("* * * * * *", id="six-fields-with-seconds"),
        pytest.param("@daily", id="macro"),
    ],
)
def test_parse_rejects_a_wrong_number_of_fields(expr: str) -> None:
    with pytest.raises(ValueError, match="must have 5 fields"):
        Cron.parse(expr)


@pytest.mark.parametrize(
    "expr",
    [
        pytest.param("60 * * * *", id="minute-60"),
        pytest.param("* 24 * * *", id="hour-24"),
        pytest.param("* * 0 * *", id="day-0"),
        pytest.param("* * 32 * *", id="day-32"),
        pytest.param("* * * 0 *", id="month-0"),
        pytest.param("* * * 13 *", id="month-13"),
        pytest.param("* * * * 8", id="weekday-8"),
        pytest.param("0-60 * * * *", id="range-past-the-end"),
        pytest.param("30-10 * * * *", id="reversed-range"),
        pytest.param("5,61 * * * *", id="one-list-item-out-of-range"),
    ],
)
def test_parse_rejects_values_out_of_range(expr: str) -> None:
    with pytest.raises(ValueError, match="out of range"):
        Cron.parse(expr)


@pytest.mark.parametrize("expr", ["*/0 * * * *", "0 0-23/0 * * *"])
def test_parse_rejects_a_zero_step(expr: str) -> None:
    with pytest.raises(ValueError, match="bad step"):
        Cron.parse(expr)


@pytest.mark.parametrize("expr", ["*/x * * * *", "a * * * *", "1,,2 * * * *", "-1 * * * *"])
def test_parse_rejects_non_numbers(expr: str) -> None:
    with pytest.raises(ValueError):
        Cron.parse(expr)


@pytest.mark.parametrize(
    ("field", "values"),
    [
        pytest.param("*/15", {0, 15, 30, 45}, id="step-over-all"),
        pytest.param("10-20/5", {10, 15, 20}, id="step-over-range"),
        pytest.param("50/5", {50, 55}, id="step-from-a-start"),
        pytest.param("1,5,9", {1, 5, 9}, id="list"),
        pytest.param("1-3,58-59", {1, 2, 3, 58, 59}, id="list-of-ranges"),
        pytest.param("7", {7}, id="single"),
    ],
)
def test_parse_expands_minute_field(field: str, values: set[int]) -> None:
    assert Cron.parse(f"{field} * * * *").minutes == values


@pytest.mark.parametrize("expr", ["0 9 * * 0", "0 9 * * 7"])
def test_parse_reads_both_0_and_7_as_sunday(expr: str) -> None:
    assert Cron.parse(expr).weekdays == {0}


def test_parse_folds_a_weekday_range_ending_in_7_onto_sunday() -> None:
    assert Cron.parse("0 9 * * 5-7").weekdays == {5, 6, 0}


# -- next_after -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expr", "after", "expected"),
    [
        # hourly at :07
        pytest.param("7 * * * *", utc(2024, 5, 10, 10, 0), utc(2024, 5, 10, 10, 7), id="hourly-later-this-hour"),
        pytest.param("7 * * * *", utc(2024, 5, 10, 10, 7), utc(2024, 5, 10, 11, 7), id="hourly-strictly-after"),
        pytest.param("7 * * * *", utc(2024, 5, 10, 10, 6, 59), utc(2024, 5, 10, 10, 7), id="hourly-seconds-dropped"),
        pytest.param("7 * * * *", utc(2024, 5, 10, 23, 30), utc(2024, 5, 11, 0, 7), id="hourly-over-midnight"),
        # daily at 03:00
        pytest.param("0 3 * * *", utc(2024, 5, 10, 2, 59), utc(2024, 5, 10, 3, 0), id="daily-same-day"),
        pytest.param("0 3 * * *", utc(2024, 5, 10, 3, 0), utc(2024, 5, 11, 3, 0), id="daily-next-day"),
        pytest.param("0 3 * * *", utc(2024, 12, 31, 4, 0), utc(2025, 1, 1, 3, 0), id="daily-over-new-year"),
        # monthly
        pytest.param("0 0 1 * *", utc(2024, 1, 15), utc(2024, 2, 1), id="monthly-first"),
        pytest.param("0 0 1 * *", utc(2024, 12, 1), utc(2025, 1, 1), id="monthly-over-new-year"),
        pytest.param("30 6 31 * *", utc(2024, 4, 1), utc(2024, 5, 31, 6, 30), id="monthly-31st-skips-april"),
        pytest.param("0 0 15 6 *", utc(2024, 6, 15), utc(2025, 6, 15), id="yearly"),
        # weekdays (2024-05-10 is a Friday)
        pytest.param("0 9 * * 1", utc(2024, 5, 10), utc(2024, 5, 13, 9, 0), id="monday"),
        pytest.param("0 9 * * 0", utc(2024, 5, 10), utc(2024, 5, 12, 9, 0), id="sunday-as-0"),
        pytest.param("0 9 * * 7", utc(2024, 5, 10), utc(2024, 5, 12, 9, 0), id="sunday-as-7"),
        pytest.param("0 9 * * 1-5", utc(2024, 5, 10, 9, 0), utc(2024, 5, 13, 9, 0), id="weekdays-skip-weekend"),
        # steps, ranges, lists
        pytest.param("*/15 * * * *", utc(2024, 5, 10, 10, 0), utc(2024, 5, 10, 10, 15), id="every-15-min"),
        pytest.param("*/15 * * * *", utc(2024, 5, 10, 10, 14), utc(2024, 5, 10, 10, 15), id="every-15-min-next"),
        pytest.param("*/15 * * * *", utc(2024, 5, 10, 10, 45), utc(2024, 5, 10, 11, 0), id="every-15-min-wraps"),
        pytest.param("0 9-17/4 * * *", utc(2024, 5, 10, 9, 0), utc(2024, 5, 10, 13, 0), id="stepped-hour-range"),
        pytest.param("0 9-17/4 * * *", utc(2024, 5, 10, 17, 0), utc(2024, 5, 11, 9, 0), id="stepped-range-ends"),
        pytest.param("15,45 8,20 * * *", utc(2024, 5, 10, 8, 15), utc(2024, 5, 10, 8, 45), id="list-same-hour"),
        pytest.param("15,45 8,20 * * *", utc(2024, 5, 10, 8, 45), utc(2024, 5, 10, 20, 15), id="list-next-hour"),
        pytest.param("0 0 1 1,7 *", utc(2024, 2, 1), utc(2024, 7, 1), id="month-list"),
        # Feb 29 only exists in leap years
        pytest.param("0 0 29 2 *", utc(2023, 6, 1), utc(2024, 2, 29), id="feb29-next-leap-year"),
        pytest.param("0 0 29 2 *", utc(2024, 3, 1), utc(2028, 2, 29), id="feb29-jumps-four-years"),
        # both day fields restricted: either may match (13th, or a Friday)
        pytest.param("0 0 13 * 5", utc(2024, 5, 1), utc(2024, 5, 3), id="either-day-friday-first"),
        pytest.param("0 0 13 * 5", utc(2024, 5, 10), utc(2024, 5, 13), id="either-day-13th-a-monday"),
        pytest.param("0 0 13 * 5", utc(2024, 5, 13), utc(2024, 5, 17), id="either-day-then-friday"),
    ],
)
def test_next_after_is_the_first_matching_minute_strictly_after(expr: str, after: datetime, expected: datetime) -> None:
    assert Cron.parse(expr).next_after(after) == expected


def test_next_after_drops_seconds_and_microseconds() -> None:
    nxt = Cron.parse("* * * * *").next_after(utc(2024, 5, 10, 10, 0, 30).replace(microsecond=123))
    assert nxt == utc(2024, 5, 10, 10, 1)


def test_next_after_keeps_the_timezone() -> None:
    assert Cron.parse("0 3 * * *").next_after(utc(2024, 5, 10)).tzinfo is UTC


def test_next_after_gives_up_on_an_expression_that_never_matches() -> None:
    with pytest.raises(ValueError, match="never matches"):
        Cron.parse("0 0 30 2 *").next_after(utc(2024, 1, 1))


@pytest.mark.parametrize(
    ("day", "matches"),
    [
        pytest.param(utc(2024, 5, 13), True, id="monday-the-13th"),
        pytest.param(utc(2024, 5, 17), True, id="friday-the-17th"),
        pytest.param(utc(2024, 9, 13), True, id="friday-the-13th"),
        pytest.param(utc(2024, 5, 14), False, id="tuesday-the-14th"),
    ],
)
def test_when_both_day_fields_are_restricted_either_one_matching_is_enough(day: datetime, matches: bool) -> None:
    assert Cron.parse("0 0 13 * 5").matches(day) is matches


@pytest.mark.parametrize(
    ("expr", "day", "matches"),
    [
        pytest.param("0 0 * * 5", utc(2024, 5, 13), False, id="weekday-only-other-day"),
        pytest.param("0 0 * * 5", utc(2024, 5, 17), True, id="weekday-only-friday"),
        pytest.param("0 0 13 * *", utc(2024, 5, 17), False, id="day-only-a-friday"),
        pytest.param("0 0 13 * *", utc(2024, 5, 13), True, id="day-only-the-13th"),
    ],
)
def test_when_one_day_field_is_a_star_only_the_other_decides(expr: str, day: datetime, matches: bool) -> None:
    assert Cron.parse(expr).matches(day) is matches


@pytest.mark.parametrize(
    ("when", "matches"),
    [
        (utc(2024, 5, 10, 3, 0), True),
        (utc(2024, 5, 10, 3, 1), False),
        (utc(2024, 5, 10, 4, 0), False),
    ],
)
def test_matches_checks_hour_and_minute(when: datetime, matches: bool) -> None:
    assert Cron.parse("0 3 * * *").matches(when) is matches
