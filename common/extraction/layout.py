"""Page layout from positioned characters: words, lines and segments.

The PDF reader (:mod:`common.extraction.offline`) hands over characters with
their boxes; this module groups them without any PDF library, so the grouping
rules can be tested on synthetic input.

Coordinates are top-down (``top`` < ``bottom``), in PDF points.

* A :class:`Word` is a run of characters without whitespace and without a
  visible gap.
* A :class:`Line` is the words that share a baseline, left to right.
* A :class:`Segment` is a run of words on a line separated by ordinary word
  spacing; a wide gap (a table column, a label and its value set apart) starts
  a new segment. Label/value search works on segments so that values from a
  neighbouring column are not glued onto a label.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

__all__ = [
    "Char",
    "Document",
    "Line",
    "Segment",
    "Word",
    "build_document",
    "build_lines",
    "build_words",
]

# A gap wider than this fraction of the line height splits a word when the
# PDF did not emit a space (character-positioned text).
WORD_GAP = 0.3
# Across a space the PDF engine generated (not one in the file), a gap of at
# most this fraction of the line height is kerning, not a word break.
SOFT_GAP = 0.2
SOFT_SPACE = "\x01"  # marks such a generated space in the character stream
# A gap wider than this fraction of the line height starts a new segment.
SEGMENT_GAP = 1.0


@dataclass(frozen=True, slots=True)
class Char:
    """One character in top-down page coordinates."""

    text: str
    x0: float
    top: float
    x1: float
    bottom: float


@dataclass(frozen=True, slots=True)
class Word:
    text: str
    x0: float
    top: float
    x1: float
    bottom: float
    page: int  # 1-based

    @property
    def height(self) -> float:
        return self.bottom - self.top

    @property
    def cy(self) -> float:
        return (self.top + self.bottom) / 2


@dataclass(slots=True)
class Segment:
    """Words on one line with normal spacing; ``text`` joins them with single spaces."""

    words: list[Word]
    line: int  # index of the line in Document.lines
    text: str = ""
    offsets: list[int] = field(default_factory=list)  # start offset of each word in text

    def __post_init__(self) -> None:
        parts: list[str] = []
        pos = 0
        for w in self.words:
            self.offsets.append(pos)
            parts.append(w.text)
            pos += len(w.text) + 1
        self.text = " ".join(parts)

    @property
    def page(self) -> int:
        return self.words[0].page

    @property
    def x0(self) -> float:
        return self.words[0].x0

    @property
    def x1(self) -> float:
        return self.words[-1].x1

    @property
    def top(self) -> float:
        return min(w.top for w in self.words)

    @property
    def bottom(self) -> float:
        return max(w.bottom for w in self.words)

    def word_at(self, offset: int) -> int:
        """Index of the word that contains (or follows) character ``offset``."""
        for i in range(len(self.offsets) - 1, -1, -1):
            if self.offsets[i] <= offset:
                return i
        return 0

    def span_x(self, start: int, end: int) -> tuple[float, float]:
        """Horizontal extent of the characters ``start:end`` (word granularity)."""
        a = self.word_at(start)
        b = self.word_at(max(start, end - 1))
        return self.words[a].x0, self.words[b].x1


@dataclass(slots=True)
class Line:
    page: int
    index: int
    words: list[Word]
    segments: list[Segment] = field(default_factory=list)

    @property
    def top(self) -> float:
        return min(w.top for w in self.words)

    @property
    def bottom(self) -> float:
        return max(w.bottom for w in self.words)

    @property
    def height(self) -> float:
        return self.bottom - self.top

    @property
    def text(self) -> str:
        return "   ".join(s.text for s in self.segments)


@dataclass(slots=True)
class Document:
    """All lines of a document, page by page, top to bottom."""

    lines: list[Line]
    page_sizes: list[tuple[float, float]]  # (width, height) per page

    @property
    def pages(self) -> int:
        return len(self.page_sizes)

    def text(self) -> str:
        return "\n".join(line.text for line in self.lines)

    def segments(self) -> Iterable[Segment]:
        for line in self.lines:
            yield from line.segments

    def page_lines(self, page: int) -> list[Line]:
        return [ln for ln in self.lines if ln.page == page]


def build_words(chars: Iterable[Char], page: int) -> list[Word]:
    """Group characters (in content order) into words."""
    words: list[Word] = []
    cur: list[Char] = []

    def flush() -> None:
        if cur:
            words.append(
                Word(
                    "".join(c.text for c in cur),
                    min(c.x0 for c in cur),
                    min(c.top for c in cur),
                    max(c.x1 for c in cur),
                    max(c.bottom for c in cur),
                    page,
                )
            )
            cur.clear()

    soft = False
    for ch in chars:
        if ch.text == SOFT_SPACE:
            soft = True
            continue
        if not ch.text or ch.text.isspace() or ch.text in "\ufffe\x00":
            flush()
            soft = False
            continue
        if ch.x1 - ch.x0 <= 0 and ch.bottom - ch.top <= 0:
            continue  # generated character without a box
        if cur:
            prev = cur[-1]
            h = max(prev.bottom - prev.top, ch.bottom - ch.top, 1.0)
            same_line = abs((prev.top + prev.bottom) / 2 - (ch.top + ch.bottom) / 2) < 0.5 * h
            gap = ch.x0 - prev.x1
            if not same_line or gap > (SOFT_GAP if soft else WORD_GAP) * h or ch.x1 < prev.x0:
                flush()
        soft = False
        cur.append(ch)
    flush()
    return words


def build_lines(words: Sequence[Word], *, first_index: int = 0) -> list[Line]:
    """Cluster one page's words into lines and split lines into segments."""
    if not words:
        return []
    ordered = sorted(words, key=lambda w: (w.cy, w.x0))
    groups: list[list[Word]] = []
    for w in ordered:
        if groups:
            g = groups[-1]
            g_cy = sum(x.cy for x in g) / len(g)
            h = min(w.height, min(x.height for x in g)) or 1.0
            if abs(w.cy - g_cy) <= 0.45 * h:
                g.append(w)
                continue
        groups.append([w])
    lines: list[Line] = []
    for g in groups:
        g.sort(key=lambda w: w.x0)
        line = Line(page=g[0].page, index=first_index + len(lines), words=g)
        h = max(line.height, 1.0)
        seg: list[Word] = []
        for w in g:
            if seg and w.x0 - seg[-1].x1 > SEGMENT_GAP * h:
                line.segments.append(Segment(seg, line.index))
                seg = []
            seg.append(w)
        if seg:
            line.segments.append(Segment(seg, line.index))
        lines.append(line)
    return lines


def build_document(pages: Sequence[tuple[float, float, Sequence[Word]]]) -> Document:
    """A document from ``(width, height, words)`` per page."""
    lines: list[Line] = []
    sizes: list[tuple[float, float]] = []
    for width, height, words in pages:
        sizes.append((width, height))
        lines.extend(build_lines(words, first_index=len(lines)))
    return Document(lines=lines, page_sizes=sizes)
