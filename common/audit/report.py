"""What an audit reports: findings, each auditor's result, and the merged report.

Pure data and arithmetic (no I/O): the kind's fan-in merges its items' results
with :func:`merge`, and the CLI prints the same report.
"""

from __future__ import annotations

from collections import Counter
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field


class Severity(StrEnum):
    ERROR = "error"  # the document breaks a rule
    WARNING = "warning"  # probably wrong, worth a look (a moved logo, a near miss)
    INFO = "info"  # what was found where, for the record


SEVERITIES = tuple(Severity)


class Status(StrEnum):
    PASSED = "passed"  # no error findings
    FAILED = "failed"  # at least one error finding
    SKIPPED = "skipped"  # could not run here (e.g. grammar without a model): says why, never fails the run
    ERROR = "error"  # the auditor itself failed (unreadable document, model gone): says why


class Box(BaseModel):
    """A rectangle on a page in PDF points, origin top-left (as a reader sees the page)."""

    x0: float
    y0: float
    x1: float
    y1: float

    def rounded(self) -> Box:
        return Box(x0=round(self.x0, 1), y0=round(self.y0, 1), x1=round(self.x1, 1), y1=round(self.y1, 1))


class Finding(BaseModel):
    auditor: str
    code: str  # machine-readable: disclaimer_missing, page_size, logo_moved, grammar...
    severity: Severity
    message: str
    page: int | None = None  # 1-based; None: the whole document
    quote: str | None = None  # the text concerned, as printed
    suggestion: str | None = None
    box: Box | None = None
    score: float | None = None  # match score, where the auditor measures one
    details: dict[str, Any] = Field(default_factory=dict)


class AuditorResult(BaseModel):
    auditor: str
    document: str  # the file's name
    status: Status
    findings: list[Finding] = Field(default_factory=list)
    reason: str | None = None  # why skipped or errored
    pages: int = 0  # pages examined
    seconds: float = 0.0

    @classmethod
    def of(cls, auditor: str, document: str, findings: list[Finding], *, pages: int) -> AuditorResult:
        failed = any(f.severity is Severity.ERROR for f in findings)
        return cls(
            auditor=auditor,
            document=document,
            status=Status.FAILED if failed else Status.PASSED,
            findings=findings,
            pages=pages,
        )

    @classmethod
    def skipped(cls, auditor: str, document: str, reason: str) -> AuditorResult:
        return cls(auditor=auditor, document=document, status=Status.SKIPPED, reason=reason)


def _counts(findings: list[Finding]) -> dict[str, int]:
    counted = Counter(f.severity.value for f in findings)
    return {s.value: counted.get(s.value, 0) for s in SEVERITIES}


def merge(results: list[AuditorResult]) -> dict[str, Any]:
    """The audit report: per document, findings per auditor, per page and per severity.

    Deterministic (sorted by document, auditor, page), so the same results make
    the same report whatever order the items finished in.
    """
    documents: dict[str, list[AuditorResult]] = {}
    for result in results:
        documents.setdefault(result.document, []).append(result)
    out: list[dict[str, Any]] = []
    for name in sorted(documents):
        ran = sorted(documents[name], key=lambda r: r.auditor)
        findings = [f for r in ran for f in r.findings]
        pages: dict[str, list[dict[str, Any]]] = {}
        for f in sorted(findings, key=lambda f: (f.page or 0, f.auditor, SEVERITIES.index(f.severity))):
            pages.setdefault(str(f.page) if f.page else "document", []).append(f.model_dump(mode="json"))
        out.append(
            {
                "document": name,
                "verdict": _verdict(ran),
                "by_severity": _counts(findings),
                "auditors": {
                    r.auditor: {
                        "status": r.status.value,
                        "reason": r.reason,
                        "pages": r.pages,
                        "seconds": round(r.seconds, 3),
                        "by_severity": _counts(r.findings),
                        "findings": [f.model_dump(mode="json") for f in r.findings],
                    }
                    for r in ran
                },
                "by_page": pages,
            }
        )
    every = [f for r in results for f in r.findings]
    return {
        "verdict": _verdict(results),
        "documents": out,
        "by_severity": _counts(every),
        "by_status": dict(sorted(Counter(r.status.value for r in results).items())),
    }


def _verdict(results: list[AuditorResult]) -> str:
    statuses = {r.status for r in results}
    if Status.FAILED in statuses:
        return "failed"
    if Status.ERROR in statuses:
        return "incomplete"
    return "passed"
