"""Dates, amounts and currencies as printed on invoices -> normalised values."""

from __future__ import annotations

import pytest

from common.extraction.normalize import (
    find_amounts,
    find_currencies,
    find_dates,
    guess_dayfirst,
    normalize_currency,
    parse_amount,
    parse_date,
)


@pytest.mark.parametrize(
    ("text", "iso"),
    [
        ("03.11.2017", "2017-11-03"),
        ("2017-11-03", "2017-11-03"),
        ("Aug 3, 2014", "2014-08-03"),
        ("August 3 , 2014", "2014-08-03"),
        ("3. März 2017", "2017-03-03"),
        ("3 mars 2017", "2017-03-03"),
        ("1er janvier 2020", "2020-01-01"),
        ("19 april 2014", "2014-04-19"),
        ("7. Mai 2014", "2014-05-07"),
        ("28/11/2022", "2022-11-28"),
        ("20-10-2015", "2015-10-20"),
        ("05.03.18", "2018-03-05"),
        ("20180305", "2018-03-05"),
    ],
)
def test_parse_date_formats(text: str, iso: str) -> None:
    assert parse_date(text) == iso


def test_ambiguous_slash_date_follows_dayfirst() -> None:
    assert parse_date("11/03/2017", dayfirst=True) == "2017-03-11"
    assert parse_date("11/03/2017", dayfirst=False) == "2017-11-03"


def test_unambiguous_slash_date_ignores_dayfirst() -> None:
    assert parse_date("03/20/2023", dayfirst=True) == "2023-03-20"


def test_impossible_date_is_rejected() -> None:
    assert parse_date("31.02.2020") is None


def test_numbers_that_are_not_dates_are_ignored() -> None:
    assert find_dates("Umrechnungskurs 1.12244, IBAN DE12 1234 4321") == []


def test_find_dates_reports_positions() -> None:
    (d,) = find_dates("Rechnungsdatum: 05.03.2018")
    assert (d.iso, d.start, d.end) == ("2018-03-05", 16, 26)


def test_guess_dayfirst_from_unambiguous_dates() -> None:
    assert guess_dayfirst("Date 03/20/2023, due 04/04/2023") is False
    assert guess_dayfirst("Date 20/03/2023") is True


def test_guess_dayfirst_uses_us_hint_when_undecided() -> None:
    assert guess_dayfirst("Date 03/04/2023", us_hint=True) is False
    assert guess_dayfirst("Date 03/04/2023") is True


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("1.234,56", 1234.56),
        ("1,234.56", 1234.56),
        ("1 234,56", 1234.56),
        ("1\u202f234,56", 1234.56),
        ("1'234.56", 1234.56),
        ("-12.50", -12.5),
        ("12.50-", -12.5),
        ("(12.50)", -12.5),
        ("€ 717,97", 717.97),
        ("$4.11", 4.11),
        ("-$693.38", -693.38),
        ("45,93 €", 45.93),
        ("1021,91", 1021.91),
        ("9,9000", 9.9),
        ("1.234", 1234.0),
        ("1.234.567,00", 1234567.0),
    ],
)
def test_parse_amount_formats(text: str, value: float) -> None:
    assert parse_amount(text) == pytest.approx(value)


def test_parse_amount_without_number_is_none() -> None:
    assert parse_amount("Total") is None


def test_find_amounts_keeps_separate_numbers_apart() -> None:
    assert [a.value for a in find_amounts("2014 12")] == [2014.0, 12.0]


def test_find_amounts_counts_decimals() -> None:
    (a,) = find_amounts("EUR 518,99")
    assert (a.value, a.decimals, a.text) == (518.99, 2, "518,99")


@pytest.mark.parametrize(
    ("text", "code"),
    [("€", "EUR"), ("usd", "USD"), ("£", "GBP"), ("GBP", "GBP"), ("Rs. 40", "INR"), ("US$ 5", "USD")],
)
def test_normalize_currency(text: str, code: str) -> None:
    assert normalize_currency(text) == code


def test_lower_case_code_in_running_text_is_not_a_currency() -> None:
    assert find_currencies("the eur zone") == []


def test_unknown_three_letters_are_not_currencies() -> None:
    assert normalize_currency("ALL") is None
