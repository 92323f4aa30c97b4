"""Structure-aware chunking of a document's text, pure.

A document arrives as pages of text. Chunks follow its structure: a heading
(a Markdown ATX line, which the HTML and Markdown readers produce) starts a
new section and no chunk or overlap crosses a section; inside a section,
sentences are packed into chunks within a token budget, preferring to cut at
a paragraph's end. Each chunk repeats the last sentences of the one before it
(up to ``overlap_tokens``) so a passage cut at a boundary is still found whole.

Every chunk keeps its character span in the document's text (the pages
joined by :data:`PAGE_SEPARATOR`) and the pages it covers, so
``doc_text[chunk.start:chunk.end] == chunk.text`` always holds.

**Token estimate.** Without the embedding model's tokenizer (the offline path
has none), a whitespace-separated word costs ``ceil(len(word) / 4)`` tokens:
"the" 1, "invoice" 2, "INV/2023/03/0008" 4. Subword tokenizers average about
four characters per token on English and German prose, and counting per word
keeps the estimate additive, so a chunk's estimate is exactly the sum of its
sentences'. Budgets should leave headroom under the model's limit.

Chunk ids are the document's content hash plus the chunk's position: the same
bytes chunked with the same settings give the same ids, so re-ingesting an
unchanged document writes nothing new.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = [
    "PAGE_SEPARATOR",
    "Chunk",
    "ChunkSettings",
    "PageText",
    "chunk_document",
    "chunk_id",
    "document_text",
    "estimate_tokens",
]

PAGE_SEPARATOR = "\n\n"
_WORD = re.compile(r"\S+")
_PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n")
_HEADING = re.compile(r"^#{1,6}[ \t]+\S")
# A sentence ends at . ! ? (optionally closed by a quote or bracket) before whitespace, or at a line end.
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|(?<=[.!?][\"')\]])\s+|\n")


class ChunkSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    max_tokens: int = Field(default=256, ge=16, le=8192)
    overlap_tokens: int = Field(default=32, ge=0)

    @model_validator(mode="after")
    def _overlap_below_budget(self) -> ChunkSettings:
        if self.overlap_tokens * 2 > self.max_tokens:
            raise ValueError("overlap_tokens must be at most half of max_tokens")
        return self


class PageText(BaseModel):
    model_config = ConfigDict(frozen=True)

    page: int = Field(ge=1)
    text: str


class Chunk(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: str
    position: int
    text: str
    start: int  # character span in document_text(pages)
    end: int
    page: int  # first page the chunk covers
    page_end: int  # last page
    heading: str | None = None
    tokens: int


def estimate_tokens(text: str) -> int:
    """The documented estimate: each whitespace-separated word costs ceil(len/4)."""
    return sum((len(w) + 3) // 4 for w in _WORD.findall(text))


def chunk_id(doc_hash: str, position: int) -> str:
    return f"{doc_hash[:32]}-{position:05d}"


def document_text(pages: Sequence[PageText]) -> str:
    return PAGE_SEPARATOR.join(p.text for p in pages)


@dataclass(frozen=True, slots=True)
class _Unit:
    """An atomic piece a chunk is built from: a sentence (or a slice of an over-long one)."""

    start: int
    end: int
    page: int
    section: int
    heading: str | None
    tokens: int
    ends_paragraph: bool


def chunk_document(doc_hash: str, pages: Sequence[PageText], settings: ChunkSettings) -> list[Chunk]:
    text = document_text(pages)
    units = _units(text, pages, settings.max_tokens)
    chunks: list[Chunk] = []
    i = 0
    while i < len(units):
        j = _pack(units, i, settings.max_tokens)
        first, last = units[i], units[j - 1]
        chunks.append(
            Chunk(
                id=chunk_id(doc_hash, len(chunks)),
                position=len(chunks),
                text=text[first.start : last.end],
                start=first.start,
                end=last.end,
                page=first.page,
                page_end=last.page,
                heading=first.heading,
                tokens=sum(u.tokens for u in units[i:j]),
            )
        )
        i = _next_start(units, i, j, settings.overlap_tokens)
    return chunks


def _pack(units: Sequence[_Unit], i: int, budget: int) -> int:
    """The end (exclusive) of the chunk starting at unit ``i``."""
    total = units[i].tokens
    j = i + 1
    last_paragraph_end = j if units[i].ends_paragraph else None
    while j < len(units) and units[j].section == units[i].section and total + units[j].tokens <= budget:
        total += units[j].tokens
        j += 1
        if units[j - 1].ends_paragraph:
            last_paragraph_end = j
    cut_mid_paragraph = j < len(units) and units[j].section == units[i].section and not units[j - 1].ends_paragraph
    if cut_mid_paragraph and last_paragraph_end is not None:
        # Prefer a paragraph's end when that still fills half the budget.
        filled = sum(u.tokens for u in units[i:last_paragraph_end])
        if filled * 2 >= budget:
            return last_paragraph_end
    return j


def _next_start(units: Sequence[_Unit], i: int, j: int, overlap: int) -> int:
    """Where the next chunk starts: ``j`` less the trailing units that fit the overlap."""
    if j >= len(units) or overlap == 0 or units[j].section != units[j - 1].section:
        return j
    k, total = j, 0
    while k - 1 > i and units[k - 1].section == units[j].section and total + units[k - 1].tokens <= overlap:
        k -= 1
        total += units[k].tokens
    return k


def _units(text: str, pages: Sequence[PageText], budget: int) -> list[_Unit]:
    units: list[_Unit] = []
    section, heading = 0, None
    offset = 0
    for p in pages:
        for para_start, para_end in _spans(p.text, _PARAGRAPH_BREAK):
            para = p.text[para_start:para_end]
            if _HEADING.match(para):
                section += 1
                heading = para.splitlines()[0].lstrip("#").strip()
            sentences = [s for s in _spans(para, _SENTENCE_END) if para[s[0] : s[1]].strip()]
            for n, (s, e) in enumerate(sentences):
                for a, b in _fit(para, s, e, budget):
                    units.append(
                        _Unit(
                            start=offset + para_start + a,
                            end=offset + para_start + b,
                            page=p.page,
                            section=section,
                            heading=heading,
                            tokens=estimate_tokens(para[a:b]),
                            ends_paragraph=n == len(sentences) - 1 and b == e,
                        )
                    )
        offset += len(p.text) + len(PAGE_SEPARATOR)
    return units


def _spans(text: str, sep: re.Pattern[str]) -> list[tuple[int, int]]:
    """Spans of ``text`` between separators, trimmed of surrounding whitespace, empty ones dropped."""
    out: list[tuple[int, int]] = []
    pos = 0
    for m in sep.finditer(text):
        out.append((pos, m.start()))
        pos = m.end()
    out.append((pos, len(text)))
    trimmed = []
    for s, e in out:
        while s < e and text[s].isspace():
            s += 1
        while e > s and text[e - 1].isspace():
            e -= 1
        if e > s:
            trimmed.append((s, e))
    return trimmed


def _fit(text: str, start: int, end: int, budget: int) -> list[tuple[int, int]]:
    """A sentence over the budget is cut at word boundaries (and a giant word by characters)."""
    if estimate_tokens(text[start:end]) <= budget:
        return [(start, end)]
    pieces: list[tuple[int, int]] = []
    cur_start, cur_tokens, cur_end = -1, 0, -1
    for m in _WORD.finditer(text, start, end):
        for ws in range(m.start(), m.end(), budget * 4):
            we = min(ws + budget * 4, m.end())
            cost = (we - ws + 3) // 4
            if cur_start >= 0 and cur_tokens + cost > budget:
                pieces.append((cur_start, cur_end))
                cur_start, cur_tokens = -1, 0
            if cur_start < 0:
                cur_start = ws
            cur_tokens += cost
            cur_end = we
    if cur_start >= 0:
        pieces.append((cur_start, cur_end))
    return pieces
