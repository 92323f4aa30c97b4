"""The research kind's pure core: plans, answers and their citations, the report."""

from __future__ import annotations

import pytest

from common.core.errors import MalformedModelOutput
from common.core.research import (
    Answer,
    build_markdown,
    citation_of,
    parse_answer,
    parse_plan,
    parse_report,
    report_prompt,
)
from common.core.retrieval import Hit


def _hit(chunk: str, document: str, page: int) -> Hit:
    return Hit(
        chunk_id=chunk,
        collection_id="c1",
        document_id=f"d-{document}",
        document=document,
        page=page,
        page_end=page,
        start=0,
        end=10,
        score=1.0,
        snippet="…",
        text="text",
    )


HITS = [_hit("k1", "a.pdf", 2), _hit("k2", "b.md", 1)]


def test_a_plan_keeps_distinct_sub_questions_up_to_the_limit() -> None:
    value = {"subquestions": ["  How  many? ", "how many?", "", "Why?", "When?"]}
    assert parse_plan(value, 2) == ["How many?", "Why?"]


@pytest.mark.parametrize("value", [{}, {"subquestions": "x"}, {"subquestions": ["", " "]}, []])
def test_a_plan_without_sub_questions_is_malformed(value: object) -> None:
    with pytest.raises(MalformedModelOutput):
        parse_plan(value, 5)


def test_an_answer_keeps_the_chunks_it_cites_in_the_list_and_in_its_text() -> None:
    got = parse_answer({"answer": "It is 27 [S2].", "citations": ["S1"]}, "Q?", HITS)
    assert [(c.label, c.chunk_id, c.document, c.page) for c in got.citations] == [
        ("S1", "k1", "a.pdf", 2),
        ("S2", "k2", "b.md", 1),
    ]
    assert got.retrieved == 2


@pytest.mark.parametrize(
    "value",
    [
        {"answer": "It is 27.", "citations": ["S3"]},  # a label it was not given
        {"answer": "It is 27 [S9].", "citations": []},  # in the text only
        {"answer": "", "citations": []},
        {"answer": "x", "citations": "S1"},
    ],
)
def test_an_answer_citing_what_it_was_not_given_or_without_text_is_malformed(value: object) -> None:
    with pytest.raises(MalformedModelOutput):
        parse_answer(value, "Q?", HITS)


def _answers() -> list[Answer]:
    return [
        Answer(subquestion="Q1?", answer="One [S1].", citations=[citation_of("S1", HITS[0])]),
        Answer(subquestion="Q2?", answer="Two.", citations=[citation_of("S1", HITS[1]), citation_of("S2", HITS[0])]),
    ]


def test_the_report_numbers_sources_once_and_lists_the_failed_sub_questions() -> None:
    md = build_markdown("The question?", "Title", "Summary [1].", _answers(), [("Q3?", "model unavailable")])
    assert md.startswith("# Title\n\n**Question:** The question?\n\n## Summary\n\nSummary [1].\n")
    assert "### Q1?\n\nOne [1].\n" in md
    assert "### Q2?\n\nTwo. [2][1]\n" in md  # cited in the list only: appended, in the report's numbers
    assert "## Sources\n\n1. a.pdf, page 2\n2. b.md, page 1\n" in md
    assert md.endswith("## Sub-questions that failed\n\n- Q3? (model unavailable)\n")


def test_the_report_prompt_names_the_failed_sub_questions() -> None:
    assert "could not be answered: Q3?" in report_prompt("Q?", _answers(), ["Q3?"])


def test_a_summary_citing_a_source_number_that_does_not_exist_is_malformed() -> None:
    assert parse_report({"title": " A  title ", "summary": "See [2]."}, _answers()) == ("A title", "See [2].")
    with pytest.raises(MalformedModelOutput):
        parse_report({"title": "T", "summary": "See [3]."}, _answers())
    with pytest.raises(MalformedModelOutput):
        parse_report({"title": "", "summary": "x"}, _answers())
