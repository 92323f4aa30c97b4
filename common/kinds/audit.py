"""``audit``: check documents against rules, one work item per (document, auditor).

Settings are :class:`common.audit.settings.AuditSettings` (required
disclaimers, format rules, where the logo belongs, grammar language/style).
The reference logo is uploaded with the job's documents and named in
``logo_file``; it is not audited itself. Each item runs one auditor on one
document (``common.audit.run``), so the four auditors of a document run in
parallel and progress counts per auditor. An item's rows are its findings
(exported as any kind's rows); the fan-in merges every item into the report
stored on ``Run.outputs`` (per document: per auditor, per page, per severity).

Throttling: the platform's per-user cap (``queued``) holds back items of a
user over ``SLUICE_MAX_RUNNING_TASKS_PER_USER``; logo matching, the CPU-heavy
auditor, is bounded per process by ``SLUICE_LOGO_CONCURRENCY``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

from common.audit import AUDITORS
from common.audit.report import AuditorResult, Box, Finding, Severity, Status, merge
from common.audit.run import Inputs, run_auditor
from common.audit.settings import AuditSettings
from common.core.errors import PermanentError, SluiceError
from common.core.models import Job, Run, SourceFile, TaskResult, WorkItem
from common.core.states import TaskStatus
from common.kinds import Estimate, ItemCall, ItemDone, ItemSpec, Kind, register
from common.ports.textmodel import TextModel
from common.service import repo

COLUMNS = [
    "document",
    "auditor",
    "status",
    "page",
    "severity",
    "code",
    "message",
    "quote",
    "suggestion",
    "score",
    "box",
    "details",
]


def _is_pdf(f: SourceFile) -> bool:
    return f.name.lower().endswith(".pdf") or (f.mime_type or "") == "application/pdf"


def fan_out(job: Job, inputs: Sequence[SourceFile], settings: AuditSettings) -> list[ItemSpec]:
    """One item per PDF and auditor; the reference logo is an input, not a document to audit."""
    logo = next((f for f in inputs if settings.logo_file is not None and f.name == settings.logo_file), None)
    if settings.logo_file is not None and logo is None and "logo" in settings.auditors:
        raise PermanentError(
            f"the reference logo {settings.logo_file!r} is not among the job's files",
            code="logo_missing",
            hint="Upload the logo image with the documents (sluice audit --logo FILE).",
        )
    documents = sorted((f for f in inputs if _is_pdf(f) and f is not logo), key=lambda f: (f.name, f.id))
    if not documents:
        raise PermanentError(f"job {job.id} has no PDF to audit", code="no_documents", hint="Upload PDF documents.")
    return [
        ItemSpec(
            key=f"{doc.id}.{auditor}",
            name=f"{doc.name} · {auditor}",
            params={
                "auditor": auditor,
                "document_id": doc.id,
                "document": doc.name,
                "logo_id": None if logo is None else logo.id,
            },
        )
        for doc in documents
        for auditor in settings.auditors
    ]


def _blob(call: ItemCall, file_id: str) -> bytes:
    found = repo.get(call.ctx.store, SourceFile, file_id)
    if found is None or found[0].blob_uri is None:
        raise PermanentError(f"file {file_id} of this audit is gone", code="file_missing")
    return call.ctx.blobs.get_bytes(found[0].blob_uri)


def _text_model(call: ItemCall) -> TextModel | None:
    # The text-model port (Gemini / OpenAI-compatible) when SLUICE_TEXT_MODEL names one;
    # without one grammar is skipped with "needs a model".
    return call.ctx.deps.text_model()


def handle(call: ItemCall) -> ItemDone | SluiceError:
    settings = call.settings
    assert isinstance(settings, AuditSettings)
    params = call.item.params
    auditor, name = str(params["auditor"]), str(params["document"])
    data = _blob(call, str(params["document_id"]))
    logo = _blob(call, str(params["logo_id"])) if auditor == "logo" and params.get("logo_id") else None
    done = {int(k): [Finding.model_validate(f) for f in v] for k, v in (call.checkpoint or {}).get("pages", {}).items()}

    def save_page(page: int, found: list[Finding]) -> None:
        # A grammar attempt that fails mid-document resumes after the pages already read.
        done[page] = found
        snapshot = {str(k): [f.model_dump(mode="json") for f in v] for k, v in done.items()}
        call.save_checkpoint({"pages": snapshot})

    inputs = Inputs(
        logo=logo,
        model=_text_model(call) if auditor == "grammar" else None,
        logo_concurrency=call.ctx.settings.logo_concurrency,
        grammar_done=done,
        on_grammar_page=save_page,
    )
    result = run_auditor(auditor, name, data, settings, inputs)
    return ItemDone(result=to_rows(result))


def to_rows(result: AuditorResult) -> TaskResult:
    """An auditor's result as an item's rows: one per finding (a skipped auditor: one row saying why)."""
    rows: list[list[Any]] = []
    for f in result.findings:
        box = None if f.box is None else f"{f.box.x0},{f.box.y0},{f.box.x1},{f.box.y1}"
        details = json.dumps(f.details, sort_keys=True) if f.details else None
        rows.append(
            [
                result.document,
                result.auditor,
                result.status.value,
                f.page,
                f.severity.value,
                f.code,
                f.message,
                f.quote,
                f.suggestion,
                f.score,
                box,
                details,
            ]
        )
    if result.status is Status.SKIPPED:
        rows.append([result.document, result.auditor, "skipped", None, None, "skipped", result.reason, *[None] * 5])
    notes = [json.dumps({"status": result.status.value, "reason": result.reason, "seconds": round(result.seconds, 3)})]
    return TaskResult(
        columns=list(COLUMNS),
        results=rows,
        row_pages=[r[3] for r in rows],
        method=f"audit.{result.auditor}",
        pages=result.pages,
        notes=notes,
    )


def from_item(item: WorkItem) -> AuditorResult:
    """The auditor's result an item stored (a failed or cancelled item: status ``error`` with its reason)."""
    auditor, document = str(item.params.get("auditor")), str(item.params.get("document"))
    if item.status is not TaskStatus.COMPLETED or item.result is None:
        reason = (item.error or {}).get("message") or item.status.value
        return AuditorResult(auditor=auditor, document=document, status=Status.ERROR, reason=reason)
    summary: dict[str, Any] = json.loads(item.result.notes[0]) if item.result.notes else {}
    findings = []
    for row in item.result.results:
        values = dict(zip(COLUMNS, row, strict=False))
        if values["code"] == "skipped":
            continue
        box = _box(values["box"])
        findings.append(
            Finding(
                auditor=auditor,
                code=values["code"],
                severity=Severity(values["severity"]),
                message=values["message"],
                page=values["page"],
                quote=values["quote"],
                suggestion=values["suggestion"],
                score=values["score"],
                box=box,
                details=json.loads(values["details"]) if values["details"] else {},
            )
        )
    return AuditorResult(
        auditor=auditor,
        document=document,
        status=Status(summary.get("status", "passed")),
        reason=summary.get("reason"),
        findings=findings,
        pages=item.result.pages,
        seconds=float(summary.get("seconds", 0.0)),
    )


def _box(text: str | None) -> Box | None:
    if not text:
        return None
    x0, y0, x1, y1 = (float(v) for v in text.split(","))
    return Box(x0=x0, y0=y0, x1=x1, y1=y1)


def fan_in(run: Run, items: Iterable[WorkItem]) -> dict[str, Any]:
    """The merged audit report (per document: per auditor, per page, per severity)."""
    return merge([from_item(i) for i in items])


def progress_by_auditor(items: Iterable[WorkItem]) -> dict[str, dict[str, int]]:
    """Per auditor: items done, failed and in all (what the CLI and the report show as progress)."""
    out: dict[str, dict[str, int]] = {}
    for item in items:
        counts = out.setdefault(str(item.params.get("auditor")), {"done": 0, "failed": 0, "total": 0})
        counts["total"] += 1
        if item.status is TaskStatus.COMPLETED:
            counts["done"] += 1
        elif item.status in (TaskStatus.FAILED, TaskStatus.CANCELLED):
            counts["failed"] += 1
    return dict(sorted(out.items(), key=lambda kv: AUDITORS.index(kv[0]) if kv[0] in AUDITORS else 99))


def estimate(job: Job, inputs: Sequence[SourceFile], settings: AuditSettings) -> Estimate:
    return Estimate(items=len(fan_out(job, inputs, settings)))


KIND = register(
    Kind(
        name="audit",
        settings_model=AuditSettings,
        fan_out=fan_out,
        handle=handle,
        fan_in=fan_in,
        function="audit",
        unit="checks",
        estimate=estimate,
        run_timeout_s=3600.0,
    )
)
