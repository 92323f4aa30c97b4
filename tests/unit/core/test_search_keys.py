"""Date and identifier keys: the same key however a date or a code is written."""

from __future__ import annotations

import pytest

from common.core.search_keys import required_terms, search_keys


@pytest.mark.parametrize(
    "text",
    ["dated 2013-03-05", "Rechnungsdatum 05.03.2013", "on 5.3.2013", "5 March 2013", "5. März 2013",
     "March 5, 2013", "Mar 5th 2013", "2013/03/05"],
)  # fmt: skip
def test_every_way_of_writing_a_date_gives_its_iso_key(text: str) -> None:
    assert "d20130305" in search_keys(text)


def test_a_slashed_date_that_could_be_either_order_gives_both_keys() -> None:
    assert set(search_keys("03/05/2013")) == {"d20130305", "d20130503"}
    assert search_keys("25/12/2013") == ["d20131225"]


def test_an_impossible_date_gives_no_key() -> None:
    assert search_keys("31.02.2013") == []


def test_an_identifier_joined_by_punctuation_gives_one_key_without_it() -> None:
    assert search_keys("Invoice INV/2023/03/0008 and #BLR_WFLD2015") == ["inv2023030008", "blrwfld2015"]
    assert search_keys("INV-2023-03-0008") == ["inv2023030008"]


def test_words_joined_without_a_digit_and_dates_are_not_identifiers() -> None:
    assert search_keys("e-mail and/or well-known") == []
    assert search_keys("2013-03-05") == ["d20130305"]


def test_the_required_terms_are_the_keys_and_the_long_codes() -> None:
    words = ["invoice", "number", "42183017", "2014", "r876"]
    assert required_terms(words, ["d20140803"]) == ["d20140803", "42183017"]
    assert required_terms(["invoice", "from", "acme"], []) == []
