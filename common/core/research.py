"""The ``research`` kind's pure core: settings, prompts, answer schemas, citation checks, the Markdown report.

A research run answers one question over a user's collections: the model
plans sub-questions (:func:`plan_prompt`, :data:`PLAN_SCHEMA`), each
sub-question is answered from the chunks retrieved for it, citing them by the
labels it was given (:func:`answer_prompt`, :func:`parse_answer`: a citation
of a chunk it was not given makes the answer malformed), and a final call
writes the report over the answers (:func:`report_prompt`,
:func:`build_markdown`), with the sources (document and page) and the
sub-questions that failed.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from common.core.errors import MalformedModelOutput
from common.core.retrieval import Hit

PROMPT_VERSION = "research-1"
MAX_QUESTION = 2000


class ResearchSettings(BaseModel):
    """Answer a question over your collections: sub-questions, answers with citations, one report."""

    model_config = ConfigDict(extra="forbid")

    question: str = Field(min_length=3, max_length=MAX_QUESTION, description="The question to research.")
    collections: list[str] = Field(
        min_length=1, max_length=20, description="Your collections to search, by id or name."
    )
    max_subquestions: int = Field(default=5, ge=1, le=20, description="At most this many sub-questions.")
    k: int = Field(default=6, ge=1, le=20, description="Chunks retrieved per sub-question.")
    model: str | None = Field(default=None, description="The text model to call (default: the deployment's).")

    @field_validator("question")
    @classmethod
    def _strip(cls, v: str) -> str:
        v = v.strip()
        if len(v) < 3:
            raise ValueError("the question is empty")
        return v


# -- plan -------------------------------------------------------------------------------

PLAN_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "subquestions": {
            "type": "array",
            "items": {"type": "string"},
            "minItems": 1,
        }
    },
    "required": ["subquestions"],
}

SYSTEM = (
    "You are a careful research assistant. You answer only from the sources you are given "
    "and cite them; when the sources do not say, you say so."
)


def plan_prompt(question: str, max_subquestions: int) -> str:
    return (
        "Break this research question into at most "
        f"{max_subquestions} self-contained sub-questions, each answerable by searching a document collection. "
        "Together they must cover the question; do not repeat one.\n\n"
        f"Question: {question}\n\n"
        'Answer as JSON: {"subquestions": ["...", "..."]}.'
    )


def parse_plan(value: Any, max_subquestions: int) -> list[str]:
    """The distinct, non-empty sub-questions of a plan answer, at most ``max_subquestions``."""
    raw = value.get("subquestions") if isinstance(value, dict) else None
    if not isinstance(raw, list):
        raise MalformedModelOutput("the plan has no list of sub-questions", raw_output=str(value)[:2000])
    seen: dict[str, str] = {}
    for q in raw:
        text = " ".join(str(q).split()) if isinstance(q, str) else ""
        if text and text.lower() not in seen:
            seen[text.lower()] = text
    if not seen:
        raise MalformedModelOutput("the plan's sub-questions are empty", raw_output=str(value)[:2000])
    return list(seen.values())[:max_subquestions]


# -- answers ----------------------------------------------------------------------------

ANSWER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "answer": {"type": "string"},
        "citations": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["answer", "citations"],
}

_LABEL = re.compile(r"\[(S\d+)\]")


def label(i: int) -> str:
    """The label the i-th retrieved chunk (from 0) is shown with: S1, S2..."""
    return f"S{i + 1}"


def answer_prompt(question: str, subquestion: str, hits: Sequence[Hit]) -> str:
    sources = "\n\n".join(
        f"[{label(i)}] {h.document}, page {h.page}{'' if h.page_end == h.page else f'-{h.page_end}'}:\n{h.text}"
        for i, h in enumerate(hits)
    )
    return (
        f"Research question: {question}\n"
        f"Sub-question: {subquestion}\n\n"
        f"Sources:\n{sources}\n\n"
        "Answer the sub-question from these sources only, in a few sentences. Cite each claim with the "
        "label of its source in brackets, like [S1]. List the labels you cited in citations. If the sources "
        'do not answer it, say so and cite nothing. Answer as JSON: {"answer": "...", "citations": ["S1"]}.'
    )


class Citation(BaseModel):
    """A source an answer cites: a chunk it was given, by document and page."""

    model_config = ConfigDict(frozen=True)

    label: str
    chunk_id: str
    collection_id: str
    document_id: str
    document: str
    page: int
    page_end: int
    snippet: str = ""


class Answer(BaseModel):
    """A sub-question's answer, with the chunks it cites (every one among those retrieved for it)."""

    subquestion: str
    answer: str
    citations: list[Citation] = Field(default_factory=list)
    retrieved: int = 0  # how many chunks it was given


def citation_of(label_: str, hit: Hit) -> Citation:
    return Citation(
        label=label_,
        chunk_id=hit.chunk_id,
        collection_id=hit.collection_id,
        document_id=hit.document_id,
        document=hit.document,
        page=hit.page,
        page_end=hit.page_end,
        snippet=hit.snippet[:300],
    )


def parse_answer(value: Any, subquestion: str, hits: Sequence[Hit], *, raw: str = "") -> Answer:
    """The model's answer, its citations checked against the chunks it was given.

    MalformedModelOutput (retried by the policy) when the answer is missing or
    cites a label it was not given -- in its list or in its text: a citation
    must point at a chunk that was actually retrieved.
    """
    if not isinstance(value, dict) or not isinstance(value.get("answer"), str) or not value["answer"].strip():
        raise MalformedModelOutput("the answer is missing", raw_output=raw[:2000])
    given = {label(i): h for i, h in enumerate(hits)}
    listed = value.get("citations") or []
    if not isinstance(listed, list) or not all(isinstance(c, str) for c in listed):
        raise MalformedModelOutput("citations must be a list of source labels", raw_output=raw[:2000])
    text = value["answer"].strip()
    cited = [c.strip().strip("[]") for c in listed] + _LABEL.findall(text)
    unknown = sorted({c for c in cited if c not in given})
    if unknown:
        raise MalformedModelOutput(
            f"the answer cites {', '.join(unknown)}, which it was not given (given: {', '.join(given) or 'none'})",
            raw_output=raw[:2000],
        )
    order = list(dict.fromkeys(cited))
    return Answer(
        subquestion=subquestion,
        answer=text,
        citations=[citation_of(c, given[c]) for c in order],
        retrieved=len(hits),
    )


# -- report -----------------------------------------------------------------------------

REPORT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"title": {"type": "string"}, "summary": {"type": "string"}},
    "required": ["title", "summary"],
}


def sources_of(answers: Sequence[Answer]) -> list[Citation]:
    """Every distinct chunk the answers cite, numbered in order of first citation."""
    seen: dict[str, Citation] = {}
    for a in answers:
        for c in a.citations:
            seen.setdefault(f"{c.collection_id}/{c.chunk_id}", c)
    return list(seen.values())


def _source_numbers(answers: Sequence[Answer]) -> dict[str, int]:
    return {f"{c.collection_id}/{c.chunk_id}": n for n, c in enumerate(sources_of(answers), start=1)}


def _renumbered(answer: Answer, numbers: dict[str, int]) -> str:
    """The answer's text with its local labels ([S2]) turned into the report's source numbers ([3])."""
    by_label = {c.label: numbers[f"{c.collection_id}/{c.chunk_id}"] for c in answer.citations}
    text = _LABEL.sub(lambda m: f"[{by_label[m.group(1)]}]" if m.group(1) in by_label else m.group(0), answer.answer)
    listed = [n for n in (by_label[c.label] for c in answer.citations) if f"[{n}]" not in text]
    return text + ("" if not listed else " " + "".join(f"[{n}]" for n in listed))


def report_prompt(question: str, answers: Sequence[Answer], failed: Sequence[str]) -> str:
    numbers = _source_numbers(answers)
    body = "\n\n".join(f"Sub-question: {a.subquestion}\nFindings: {_renumbered(a, numbers)}" for a in answers)
    missing = "" if not failed else "\n\nThese sub-questions could not be answered: " + "; ".join(failed)
    return (
        f"Research question: {question}\n\n{body}{missing}\n\n"
        "Write a short title and a summary (a few paragraphs) that answers the research question from these "
        "findings only. Keep their source numbers in brackets, like [2], after the claims they support; add no "
        'other sources. Answer as JSON: {"title": "...", "summary": "..."}.'
    )


def parse_report(value: Any, answers: Sequence[Answer], *, raw: str = "") -> tuple[str, str]:
    """(title, summary); MalformedModelOutput when either is missing or the summary cites a source number
    that no answer cited."""
    if not isinstance(value, dict):
        raise MalformedModelOutput("the report is not an object", raw_output=raw[:2000])
    title, summary = value.get("title"), value.get("summary")
    if not isinstance(title, str) or not title.strip() or not isinstance(summary, str) or not summary.strip():
        raise MalformedModelOutput("the report needs a title and a summary", raw_output=raw[:2000])
    known = len(sources_of(answers))
    cited = {int(n) for n in re.findall(r"\[(\d+)\]", summary)}
    unknown = sorted(n for n in cited if not 1 <= n <= known)
    if unknown:
        raise MalformedModelOutput(
            f"the summary cites source(s) {unknown}, but there are {known}", raw_output=raw[:2000]
        )
    return " ".join(title.split()), summary.strip()


def _pages(c: Citation) -> str:
    return f"page {c.page}" if c.page_end == c.page else f"pages {c.page}-{c.page_end}"


def build_markdown(
    question: str, title: str, summary: str, answers: Sequence[Answer], failed: Sequence[tuple[str, str]]
) -> str:
    """The report in Markdown: title, question, summary, each sub-question's answer, sources, failures.

    ``failed``: (sub-question, why) of the sub-questions that got no answer.
    """
    numbers = _source_numbers(answers)
    lines = [f"# {title}", "", f"**Question:** {question}", "", "## Summary", "", summary, ""]
    lines += ["## Findings", ""]
    for a in answers:
        lines += [f"### {a.subquestion}", "", _renumbered(a, numbers), ""]
    if not answers:
        lines += ["No sub-question was answered.", ""]
    lines += ["## Sources", ""]
    for n, c in enumerate(sources_of(answers), start=1):
        lines.append(f"{n}. {c.document}, {_pages(c)}")
    if not numbers:
        lines.append("None cited.")
    lines.append("")
    if failed:
        lines += ["## Sub-questions that failed", ""]
        lines += [f"- {q} ({why})" for q, why in failed]
        lines.append("")
    return "\n".join(lines)
