"""The audit's rules, given per job (the ``audit`` kind's settings model)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from common.audit import AUDITORS

# Which pages a rule is about: every page, the first or last, at least one ("any"), or these (1-based).
Pages = Literal["all", "first", "last", "any"] | list[int]

Region = Literal["top-left", "top", "top-right", "left", "center", "right", "bottom-left", "bottom", "bottom-right"]

# Named paper sizes in millimetres (portrait).
PAPER_MM: dict[str, tuple[float, float]] = {
    "A3": (297.0, 420.0),
    "A4": (210.0, 297.0),
    "A5": (148.0, 210.0),
    "Letter": (215.9, 279.4),
    "Legal": (215.9, 355.6),
}


class _Rules(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Disclaimer(_Rules):
    text: str = Field(min_length=3)
    pages: Pages = "any"
    # 0-1: how close the printed text must be (difflib ratio over the best-matching run of words).
    min_ratio: float = Field(0.85, ge=0.5, le=1.0)


class Margins(_Rules):
    """Minimum blank margins in millimetres (None: not checked)."""

    top: float | None = Field(None, ge=0)
    right: float | None = Field(None, ge=0)
    bottom: float | None = Field(None, ge=0)
    left: float | None = Field(None, ge=0)


class FormatRules(_Rules):
    page_size: str | None = "A4"  # a name in PAPER_MM, or None: any size
    size_tolerance_mm: float = Field(2.0, ge=0)
    orientation: Literal["portrait", "landscape"] | None = "portrait"
    margins_mm: Margins = Field(default_factory=lambda: Margins(top=10, right=10, bottom=10, left=10))
    embedded_fonts: bool = True
    min_image_dpi: float | None = Field(150.0, gt=0)

    @field_validator("page_size")
    @classmethod
    def _known(cls, v: str | None) -> str | None:
        if v is None:
            return None
        for name in PAPER_MM:
            if name.lower() == v.lower():
                return name
        raise ValueError(f"unknown page size {v!r}; known: {', '.join(PAPER_MM)}")


class LogoRules(_Rules):
    pages: Pages = "first"
    region: Region | None = None  # where the logo belongs (None: anywhere)
    min_score: float = Field(0.75, gt=0, le=1)  # normalised cross-correlation of the best match
    # The logo's printed width as a fraction of the page's width: the range searched.
    min_width: float = Field(0.04, gt=0, lt=1)
    max_width: float = Field(0.5, gt=0, le=1)


class GrammarRules(_Rules):
    language: str = "en"
    style: str | None = None  # e.g. "formal, British English": passed to the model
    max_pages: int = Field(50, ge=1)  # pages sent to the model, from the first


class AuditSettings(_Rules):
    """What an audit checks. The logo's image is uploaded with the job (``logo_file``)."""

    auditors: list[str] = Field(default_factory=lambda: list(AUDITORS))
    disclaimers: list[Disclaimer] = Field(default_factory=list)
    format: FormatRules = Field(default_factory=FormatRules)
    logo: LogoRules = Field(default_factory=LogoRules)
    logo_file: str | None = None  # the uploaded file's name that is the reference logo
    grammar: GrammarRules = Field(default_factory=GrammarRules)

    @field_validator("auditors")
    @classmethod
    def _auditors(cls, v: list[str]) -> list[str]:
        unknown = sorted(set(v) - set(AUDITORS))
        if unknown:
            raise ValueError(f"unknown auditors {unknown}; known: {', '.join(AUDITORS)}")
        if not v:
            raise ValueError("at least one auditor")
        return list(dict.fromkeys(v))


def select_pages(pages: Pages, count: int) -> list[int]:
    """The 1-based page numbers a selector names in a document of ``count`` pages ("any": all of them)."""
    if count <= 0:
        return []
    if pages in ("all", "any"):
        return list(range(1, count + 1))
    if pages == "first":
        return [1]
    if pages == "last":
        return [count]
    assert isinstance(pages, list)
    return sorted({p for p in pages if 1 <= p <= count})
