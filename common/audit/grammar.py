"""The grammar and style auditor: a text model reads each page and quotes what it would change.

The model is the text-model port (:mod:`common.ports.textmodel`: Gemini on
Vertex AI or any OpenAI-compatible server), asked for structured output
(:data:`SCHEMA`): ``{"findings": [{"quote", "suggestion", "severity",
"explanation"}]}``. Without a model the auditor is ``skipped`` with the reason
"needs a model": the other auditors' verdicts stand.

A quote that is not on the page is dropped (the model made it up); an answer
that breaks the schema is ``MalformedModelOutput`` from the adapter (retried
by policy). Pages already read are passed back in (``done``), so a retried
attempt does not ask again about them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from common.audit.document import AuditDocument
from common.audit.report import AuditorResult, Finding, Severity
from common.audit.settings import AuditSettings
from common.core.errors import MalformedModelOutput
from common.ports.textmodel import TextModel

NAME = "grammar"
NEEDS_A_MODEL = "needs a model (SLUICE_TEXT_MODEL is none)"
_MAX_PAGE_CHARS = 12_000

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "findings": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "quote": {"type": "string"},
                    "suggestion": {"type": "string"},
                    "severity": {"type": "string", "enum": ["error", "warning"]},
                    "explanation": {"type": "string"},
                },
                "required": ["quote", "suggestion", "severity", "explanation"],
                "additionalProperties": False,
            },
        }
    },
    "required": ["findings"],
    "additionalProperties": False,
}

SYSTEM = (
    "You are a careful copy editor. Report grammar, spelling and style problems in the page you are given. "
    "For each: quote (the exact text as printed, a few words), suggestion (the corrected text), severity "
    '("error" for grammar or spelling, "warning" for style), explanation (one short sentence). '
    "Report no findings when the page has no problem."
)


def prompt(page_text: str, language: str, style: str | None) -> str:
    wanted = f"Language: {language}." + (f" House style: {style}." if style else "")
    return f"{wanted}\nPage text:\n<<<\n{page_text[:_MAX_PAGE_CHARS]}\n>>>"


def _squash(text: str) -> str:
    return " ".join(text.split()).lower()


def parse(value: Any, page_text: str, page: int) -> list[Finding]:
    """Findings from the model's structured answer for one page (quotes not on the page are dropped)."""
    items = value.get("findings") if isinstance(value, dict) else None
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise MalformedModelOutput(f"grammar answer for page {page} has no list of findings", raw_output=str(value))
    on_page = _squash(page_text)
    out: list[Finding] = []
    for item in items:
        quote, suggestion = str(item.get("quote") or "").strip(), str(item.get("suggestion") or "").strip()
        if not quote or _squash(quote) not in on_page:
            continue
        severity = Severity.ERROR if str(item.get("severity", "")).lower() == "error" else Severity.WARNING
        out.append(
            Finding(
                auditor=NAME,
                code="grammar" if severity is Severity.ERROR else "style",
                severity=severity,
                message=str(item.get("explanation") or "suggested change"),
                page=page,
                quote=quote,
                suggestion=suggestion or None,
            )
        )
    return out


def audit(
    doc: AuditDocument,
    settings: AuditSettings,
    model: TextModel | None,
    *,
    done: dict[int, list[Finding]] | None = None,
    on_page: Callable[[int, list[Finding]], None] | None = None,
) -> AuditorResult:
    if model is None:
        return AuditorResult.skipped(NAME, doc.name, NEEDS_A_MODEL)
    rules = settings.grammar
    found = dict(done or {})
    pages = [p for p in doc.pages[: rules.max_pages] if p.text.strip()]
    for page in pages:
        if page.number in found:
            continue
        answer = model.generate(prompt(page.text, rules.language, rules.style), SCHEMA, system=SYSTEM)
        found[page.number] = parse(answer.value, page.text, page.number)
        if on_page is not None:
            on_page(page.number, found[page.number])
    findings = [f for number in sorted(found) for f in found[number]]
    return AuditorResult.of(NAME, doc.name, findings, pages=len(pages))
