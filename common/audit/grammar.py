"""The grammar and style auditor: a text model reads each page and quotes what it would change.

The model is reached through a small text-model interface (:class:`TextModel`:
one prompt in, text out), so Gemini on Vertex AI or any OpenAI-compatible
server can stand behind it. Without a model the auditor is ``skipped`` with
the reason "needs a model": the other auditors' verdicts stand.

The model answers a JSON array of ``{"quote", "suggestion", "severity",
"explanation"}``; a quote that is not on the page is dropped (the model made
it up), an answer that is not such an array is ``MalformedModelOutput``
(retried by policy). Pages already read are passed back in (``done``), so a
retried attempt does not ask again about them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any, Protocol

from common.audit.document import AuditDocument
from common.audit.report import AuditorResult, Finding, Severity
from common.audit.settings import AuditSettings
from common.core.errors import MalformedModelOutput

NAME = "grammar"
NEEDS_A_MODEL = "needs a model (no text model is configured)"
_MAX_PAGE_CHARS = 12_000
_FENCE = re.compile(r"^```(?:json)?\s*|\s*```$", re.MULTILINE)


class TextModel(Protocol):
    name: str

    def complete(self, prompt: str, *, system: str = "") -> str:
        """The model's answer (RetryableError / PermanentError as the extractor port's)."""
        ...


SYSTEM = (
    "You are a careful copy editor. You report grammar, spelling and style problems in the page you are given. "
    "Answer only a JSON array; each element is an object with: quote (the exact text as printed, a few words), "
    'suggestion (the corrected text), severity ("error" for grammar or spelling, "warning" for style), '
    "explanation (one short sentence). Answer [] when the page has no problem."
)


def prompt(page_text: str, language: str, style: str | None) -> str:
    wanted = f"Language: {language}." + (f" House style: {style}." if style else "")
    return f"{wanted}\nPage text:\n<<<\n{page_text[:_MAX_PAGE_CHARS]}\n>>>"


def _squash(text: str) -> str:
    return " ".join(text.split()).lower()


def parse(answer: str, page_text: str, page: int) -> list[Finding]:
    """Findings from the model's answer for one page (quotes not on the page are dropped)."""
    try:
        items: Any = json.loads(_FENCE.sub("", answer.strip()))
    except ValueError as exc:
        raise MalformedModelOutput(f"grammar answer for page {page} is not JSON: {exc}", raw_output=answer) from exc
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise MalformedModelOutput(f"grammar answer for page {page} is not a JSON array of objects", raw_output=answer)
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
        answer = model.complete(prompt(page.text, rules.language, rules.style), system=SYSTEM)
        found[page.number] = parse(answer, page.text, page.number)
        if on_page is not None:
            on_page(page.number, found[page.number])
    findings = [f for number in sorted(found) for f in found[number]]
    return AuditorResult.of(NAME, doc.name, findings, pages=len(pages))
