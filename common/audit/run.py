"""Run one auditor over one document: what a work item of the ``audit`` kind does."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from common.audit import AUDITORS, disclaimer, grammar, logo, page_format
from common.audit.document import read_document
from common.audit.report import AuditorResult, Finding
from common.audit.settings import AuditSettings
from common.core.errors import PermanentError
from common.ports.textmodel import TextModel


@dataclass
class Inputs:
    """What an auditor may need beyond the document: the reference logo, a text model, limits."""

    logo: bytes | None = None
    model: TextModel | None = None
    logo_concurrency: int = 2
    grammar_done: dict[int, list[Finding]] = field(default_factory=dict)
    on_grammar_page: Callable[[int, list[Finding]], None] | None = None


def run_auditor(auditor: str, name: str, data: bytes, settings: AuditSettings, inputs: Inputs) -> AuditorResult:
    """The auditor's result (UnreadableDocument / LogoUnreadable / model errors are raised, typed)."""
    if auditor not in AUDITORS:
        raise PermanentError(f"unknown auditor {auditor!r}", code="unknown_auditor", hint=f"One of {AUDITORS}.")
    started = time.perf_counter()
    if auditor == "grammar" and inputs.model is None:
        return AuditorResult.skipped(auditor, name, grammar.NEEDS_A_MODEL)
    if auditor == "logo" and inputs.logo is None:
        return AuditorResult.skipped(auditor, name, logo.NEEDS_A_LOGO)
    doc = read_document(name, data)
    if auditor == "disclaimer":
        result = disclaimer.audit(doc, settings)
    elif auditor == "format":
        result = page_format.audit(doc, settings)
    elif auditor == "logo":
        result = logo.audit(doc, data, inputs.logo, settings, limit=inputs.logo_concurrency)
    else:
        result = grammar.audit(doc, settings, inputs.model, done=inputs.grammar_done, on_page=inputs.on_grammar_page)
    result.seconds = time.perf_counter() - started
    return result
