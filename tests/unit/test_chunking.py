"""Chunking: spans, pages, headings, overlap, token budget, stable ids."""

from __future__ import annotations

import itertools

import pytest

from common.core.chunking import ChunkSettings, PageText, chunk_document, document_text, estimate_tokens

SETTINGS = ChunkSettings(max_tokens=40, overlap_tokens=10)


def _pages(*texts: str) -> list[PageText]:
    return [PageText(page=i + 1, text=t) for i, t in enumerate(texts)]


def _prose(n: int, word: str = "word") -> str:
    return " ".join(f"Sentence {i} has some {word} text in it." for i in range(n))


def test_the_token_estimate_counts_each_word_by_quarters_of_its_length() -> None:
    assert estimate_tokens("the invoice INV/2023/03/0008") == 1 + 2 + 4


def test_every_chunk_is_its_span_of_the_document_text() -> None:
    pages = _pages("# Intro\n\n" + _prose(12), "# Terms\n\n" + _prose(9, "payment"))
    text = document_text(pages)
    chunks = chunk_document("h" * 64, pages, SETTINGS)
    assert len(chunks) > 3
    for c in chunks:
        assert text[c.start : c.end] == c.text


def test_no_chunk_exceeds_the_token_budget() -> None:
    long_sentence = " ".join(["supercalifragilistic"] * 200)  # one sentence far over the budget
    chunks = chunk_document("h" * 64, _pages(_prose(30) + "\n\n" + long_sentence), SETTINGS)
    assert all(estimate_tokens(c.text) <= SETTINGS.max_tokens for c in chunks)
    assert all(c.tokens == estimate_tokens(c.text) for c in chunks)


def test_chunks_keep_the_page_they_start_and_end_on() -> None:
    chunks = chunk_document("h" * 64, _pages(_prose(10), _prose(10, "second")), SETTINGS)
    assert {c.page for c in chunks} == {1, 2}
    second = [c for c in chunks if "second" in c.text]
    assert second and all(c.page_end == 2 for c in second)
    assert all(c.page == 1 for c in chunks if "second" not in c.text)


def test_consecutive_chunks_of_a_section_overlap_by_at_most_the_overlap_budget() -> None:
    chunks = chunk_document("h" * 64, _pages(_prose(30)), SETTINGS)
    pairs = list(itertools.pairwise(chunks))
    assert pairs
    for a, b in pairs:
        assert b.start < a.end  # they share text
        assert estimate_tokens(a.text[b.start - a.start :]) <= SETTINGS.overlap_tokens


def test_a_heading_starts_a_new_chunk_and_no_overlap_crosses_it() -> None:
    pages = _pages("# Alpha\n\n" + _prose(3) + "\n\n# Beta\n\n" + _prose(3, "other"))
    chunks = chunk_document("h" * 64, pages, ChunkSettings(max_tokens=200, overlap_tokens=50))
    assert [c.heading for c in chunks] == ["Alpha", "Beta"]
    assert chunks[1].text.startswith("# Beta")
    assert chunks[0].end <= chunks[1].start


def test_a_chunk_prefers_to_end_at_a_paragraph_break() -> None:
    para = _prose(3)  # about 30 tokens
    chunks = chunk_document("h" * 64, _pages(para + "\n\n" + para), ChunkSettings(max_tokens=50, overlap_tokens=0))
    assert chunks[0].text == para


def test_chunk_ids_are_the_content_hash_and_position_so_rechunking_gives_the_same_ids() -> None:
    pages = _pages(_prose(20))
    a = chunk_document("abc" * 20, pages, SETTINGS)
    b = chunk_document("abc" * 20, pages, SETTINGS)
    assert [c.id for c in a] == [c.id for c in b]
    assert len({c.id for c in a}) == len(a)
    assert a[1].id.endswith("-00001")
    assert chunk_document("xyz" * 20, pages, SETTINGS)[0].id != a[0].id


def test_an_overlap_above_half_the_budget_is_refused() -> None:
    with pytest.raises(ValueError):
        ChunkSettings(max_tokens=40, overlap_tokens=30)
