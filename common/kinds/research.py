"""The ``research`` kind: a question over the user's collections, answered as a report with citations.

* ``prepare``: a text model must be configured, and every collection named
  (by id or name) must be the owner's; names are resolved to ids.
* ``plan`` (the platform's effectful step): the model splits the question into
  sub-questions; each becomes a work item (saved once on the run).
* each item retrieves ``k`` chunks for its sub-question
  (:func:`common.service.collections.search`, owner-scoped) and asks the
  model for an answer that cites them; a citation of a chunk it was not given
  is a malformed answer (retried by the policy). The answer is checkpointed on
  the item before the item completes, so a resumed attempt never asks again.
  Items run in parallel; a failed one is retried by the policy, then reported.
* ``finish``: the model writes the summary over the answers; the report
  (Markdown, and a PDF of it) is stored in the exports bucket, listed in
  ``outputs.files`` (downloadable: ``GET /v1/runs/{id}/files``), with its
  sources (document, page) and the sub-questions that failed.

Progress goes by phase: ``planning``, then sub-questions answered of all
(``unit="sub-questions"``), then ``writing``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from common.core import research as core
from common.core.errors import NotFound, PermanentError, SluiceError
from common.core.models import Job, Run, SourceFile, TaskResult, TaskUsage, WorkItem
from common.core.states import TaskStatus
from common.export.report_pdf import markdown_pdf
from common.kinds import Estimate, ItemCall, ItemDone, ItemSpec, Kind, StepCall, register
from common.ports.textmodel import Generation
from common.service import collections as cols
from common.service.context import Deps

RESULT_COLUMNS = ["subquestion", "answer", "sources"]


def resolve_collections(deps: Deps, owner: str, wanted: Sequence[str]) -> list[str]:
    """The ids of the owner's collections named by id or name (PermanentError for one that is not theirs)."""
    ids: list[str] = []
    for ref in wanted:
        found = cols.find_by_name(deps, owner, ref)
        if found is None:
            try:
                found = cols.get_collection(deps, owner, ref)[0]
            except NotFound:
                found = None
        if found is None:
            raise PermanentError(
                f"no collection {ref!r}",
                code="unknown_collection",
                hint="Name one of your collections (sluice ingest DOCS --collection NAME creates one).",
            )
        if found.id not in ids:
            ids.append(found.id)
    return ids


def prepare(deps: Deps, owner: str, settings: core.ResearchSettings) -> core.ResearchSettings:
    """The settings with the collections resolved to ids, once a text model is known to be configured."""
    deps.named_text_model(settings.model)  # no model configured: say so before the job exists
    return settings.model_copy(update={"collections": resolve_collections(deps, owner, settings.collections)})


def fan_out(job: Job, inputs: Sequence[SourceFile], settings: core.ResearchSettings) -> list[ItemSpec]:
    raise PermanentError("research runs are planned by the model, not fanned out", code="research_plan_only")


def plan(call: StepCall) -> list[ItemSpec] | SluiceError:
    settings = call.settings
    assert isinstance(settings, core.ResearchSettings)
    model = call.ctx.deps.named_text_model(settings.model)
    prompt = core.plan_prompt(settings.question, settings.max_subquestions)
    gen = model.generate(prompt, core.PLAN_SCHEMA, system=core.SYSTEM)
    call.spent("plan", gen.model, _usage(gen))
    questions = core.parse_plan(gen.value, settings.max_subquestions)
    return [
        ItemSpec(key=f"q{i}", name=q[:200], params={"index": i, "subquestion": q})
        for i, q in enumerate(questions, start=1)
    ]


def handle(call: ItemCall) -> ItemDone | SluiceError:
    settings = call.settings
    assert isinstance(settings, core.ResearchSettings)
    saved = (call.checkpoint or {}).get("answer")
    if saved is not None:
        # Answered by an earlier attempt that did not get to complete the item: never asked again.
        answer = core.Answer.model_validate(saved)
        usage = TaskUsage.model_validate((call.checkpoint or {}).get("usage") or {})
        return _done(answer, usage, (call.checkpoint or {}).get("model"))
    subquestion = str(call.item.params["subquestion"])
    hits = cols.search(call.ctx.deps, call.job.owner, settings.collections, subquestion, settings.k)
    model = call.ctx.deps.named_text_model(settings.model)
    prompt = core.answer_prompt(settings.question, subquestion, hits)
    gen = model.generate(prompt, core.ANSWER_SCHEMA, system=core.SYSTEM)
    answer = core.parse_answer(gen.value, subquestion, hits, raw=gen.raw)
    usage = _usage(gen)
    call.save_checkpoint(
        {"answer": answer.model_dump(mode="json"), "usage": usage.model_dump(mode="json"), "model": gen.model}
    )
    return _done(answer, usage, gen.model)


def _usage(gen: Generation) -> TaskUsage:
    return TaskUsage(input_tokens=gen.usage.input_tokens, output_tokens=gen.usage.output_tokens)


def _done(answer: core.Answer, usage: TaskUsage, model: str | None) -> ItemDone:
    sources = "; ".join(f"{c.document} p.{c.page}" for c in answer.citations)
    return ItemDone(
        result=TaskResult(
            columns=RESULT_COLUMNS,
            results=[[answer.subquestion, answer.answer, sources]],
            method="research.answer",
            notes=[answer.model_dump_json()],
        ),
        usage=usage,
        model=model,
        prompt_version=core.PROMPT_VERSION,
    )


def answer_of(item: WorkItem) -> core.Answer | None:
    """The answer a completed item stored (None: it has none)."""
    if item.status is not TaskStatus.COMPLETED or item.result is None or not item.result.notes:
        return None
    return core.Answer.model_validate_json(item.result.notes[0])


def _ordered(items: Iterable[WorkItem]) -> list[WorkItem]:
    return sorted(items, key=lambda i: int(i.params.get("index", 0)))


def _why(item: WorkItem) -> str:
    return str((item.error or {}).get("message") or item.status.value)


def fan_in(run: Run, items: Iterable[WorkItem]) -> dict[str, Any]:
    """Each sub-question's status and answer with its citations (the finish adds the report)."""
    rows: list[dict[str, Any]] = []
    for item in _ordered(items):
        answer = answer_of(item)
        rows.append(
            {
                "index": int(item.params.get("index", 0)),
                "subquestion": str(item.params.get("subquestion", item.file_name)),
                "status": item.status.value,
                "answer": None if answer is None else answer.answer,
                "citations": [] if answer is None else [c.model_dump(mode="json") for c in answer.citations],
                "error": None if answer is not None else _why(item),
            }
        )
    answered = sum(1 for r in rows if r["answer"] is not None)
    return {"subquestions": rows, "answered": answered, "failed": len(rows) - answered}


def finish(call: StepCall) -> dict[str, Any] | SluiceError:
    """Write the report over the answers (the model's summary), store it as Markdown and PDF."""
    settings = call.settings
    assert isinstance(settings, core.ResearchSettings)
    items = _ordered(call.items)
    answers = [a for a in (answer_of(i) for i in items) if a is not None]
    failed = [(str(i.params.get("subquestion", i.file_name)), _why(i)) for i in items if answer_of(i) is None]
    usage: dict[str, int | None] = {"input_tokens": 0, "output_tokens": 0}
    if answers:
        model = call.ctx.deps.named_text_model(settings.model)
        prompt = core.report_prompt(settings.question, answers, [q for q, _ in failed])
        gen = model.generate(prompt, core.REPORT_SCHEMA, system=core.SYSTEM)
        call.spent("finish", gen.model, _usage(gen))
        title, summary = core.parse_report(gen.value, answers, raw=gen.raw)
        usage = {"input_tokens": gen.usage.input_tokens, "output_tokens": gen.usage.output_tokens}
    else:
        title, summary = f"Research: {settings.question[:120]}", "No sub-question could be answered."
    markdown = core.build_markdown(settings.question, title, summary, answers, failed)
    files = _store(call, markdown, markdown_pdf(markdown, title=title))
    return {
        "title": title,
        "summary": summary,
        "sources": [c.model_dump(mode="json") for c in core.sources_of(answers)],
        "failed_subquestions": [q for q, _ in failed],
        "files": files,
        "report_usage": usage,
    }


def _store(call: StepCall, markdown: str, pdf: bytes) -> list[dict[str, Any]]:
    """The report's files, written under the run's own names (a retried finish overwrites them)."""
    deps = call.ctx.deps
    out = []
    for name, data, content_type in (
        ("report.md", markdown.encode("utf-8"), "text/markdown; charset=utf-8"),
        ("report.pdf", pdf, "application/pdf"),
    ):
        uri = deps.bucket_uri("exports", f"runs/{call.run.id}/research/{name}")
        deps.blobs.put_bytes(uri, data, content_type=content_type)
        out.append({"name": name, "uri": uri, "content_type": content_type, "bytes": len(data)})
    return out


def estimate(job: Job, inputs: Sequence[SourceFile], settings: core.ResearchSettings) -> Estimate:
    # The plan's call, one call per sub-question (k chunks of about 400 tokens each), the report's call.
    calls = settings.max_subquestions + 2
    return Estimate(items=settings.max_subquestions, input_tokens=calls * (400 * settings.k), output_tokens=calls * 300)


KIND = register(
    Kind(
        name="research",
        settings_model=core.ResearchSettings,
        fan_out=fan_out,
        plan=plan,
        handle=handle,
        fan_in=fan_in,
        finish=finish,
        function="research",
        unit="sub-questions",
        quota="model",
        estimate=estimate,
        uses_uploads=False,
        prepare=prepare,
        run_timeout_s=3600.0,
    )
)
