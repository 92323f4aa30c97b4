"""The ``extract`` kind: documents in, one table row set per document out.

Its settings are the job's own fields, prompt and extractor (as before kinds
existed), so its kind settings model is empty. One work item per uploaded
document; the handler reads the document with the run's extractor; the run's
outputs are its exports (the platform's), so it has no fan-in of its own.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict

from common.core.errors import ErrorKind, PermanentError, RetryableError, SluiceError
from common.core.models import Job, SourceFile, TaskResult, TaskUsage
from common.core.schema import DocumentExtraction
from common.kinds import Estimate, ItemCall, ItemDone, ItemSpec, Kind, register
from common.obs import metrics
from common.ports.extractor import DocumentRef
from common.service import lifecycle_events, repo
from common.service.context import Context

log = logging.getLogger("common.service.runs")


class ExtractSettings(BaseModel):
    """Extraction is configured by the job's ``fields``, ``prompt`` and ``extractor``."""

    model_config = ConfigDict(extra="forbid")


def fan_out(job: Job, inputs: Sequence[SourceFile], settings: object) -> list[ItemSpec]:
    """One item per document (its other names ride along: each gets its own rows)."""
    return [ItemSpec(key=f.id, name=f.name, duplicate_names=tuple(f.duplicate_names)) for f in inputs]


def extractor_name(ctx: Context, job: Job) -> str:
    return (job.settings.extractor or ctx.settings.extractor).value


def circuit(ctx: Context, job: Job) -> str | None:
    """The dependency whose circuit the extractor sits behind (Vertex for Gemini; None offline)."""
    try:
        dependency = getattr(ctx.deps.extractor(extractor_name(ctx, job)), "dependency", None)
    except SluiceError:
        return None  # the extraction itself reports a broken configuration
    return dependency if isinstance(dependency, str) else None


def pacing(ctx: Context, job: Job) -> float | None:
    """Seconds until the extractor's quota has room for another document (None: go now)."""
    try:
        turn = getattr(ctx.deps.extractor(extractor_name(ctx, job)), "turn", None)
    except SluiceError:
        return None  # the extraction itself reports a broken configuration
    wait = turn() if callable(turn) else None
    return float(wait) if isinstance(wait, int | float) else None


def handle(call: ItemCall) -> ItemDone | SluiceError:
    ctx, job, item = call.ctx, call.job, call.item
    name = extractor_name(ctx, job)
    found = repo.get(ctx.store, SourceFile, item.file_id)
    if found is None:
        return PermanentError(
            f"file {item.file_id} ({item.file_name}) no longer exists",
            code="file_missing",
            hint="The file was deleted after the run started; upload it again and start a new run.",
        )
    t0 = time.perf_counter()
    outcome = _call_extractor(ctx, job, found[0], name)
    latency_ms = round((time.perf_counter() - t0) * 1000, 1)
    lifecycle_events.model_called(ctx.settings, name, outcome)
    if isinstance(outcome, SluiceError):
        return outcome
    metrics.record_tokens(outcome.model or name, input_tokens=outcome.input_tokens, output_tokens=outcome.output_tokens)
    return ItemDone(
        result=TaskResult(
            columns=outcome.columns,
            results=outcome.results,
            row_pages=outcome.row_pages,
            fields=outcome.fields,
            method=outcome.method,
            pages=outcome.pages,
            notes=outcome.notes,
        ),
        usage=TaskUsage(
            input_tokens=outcome.input_tokens,
            output_tokens=outcome.output_tokens,
            latency_ms=outcome.latency_ms if outcome.latency_ms is not None else latency_ms,
        ),
        model=outcome.model or name,
        model_version=outcome.model_version,
        prompt_version=outcome.prompt_version,
    )


def _call_extractor(ctx: Context, job: Job, file: SourceFile, name: str) -> DocumentExtraction | SluiceError:
    """The extraction, or the error that ended it (classified, never raised)."""
    if file.blob_uri is None:
        return PermanentError(f"file {file.name} has no stored content", code="file_missing")
    try:
        extractor = ctx.deps.extractor(name)
        doc = DocumentRef(uri=file.blob_uri, name=file.name, mime_type=file.mime_type, size=file.size)
        return extractor.extract(doc, job.fields, prompt=job.prompt)
    except SluiceError as err:
        # Storage and model failures arrive classified (BlobUnavailable, a 429...):
        # transient ones reach the retry policy.
        return err
    except (ConnectionError, TimeoutError) as exc:
        return RetryableError(f"{type(exc).__name__} while extracting {file.name}: {exc}", kind=ErrorKind.NETWORK)
    except Exception as exc:
        # Third-party parsing code failing on one document must fail that
        # document's task (with the reason kept), not loop its message.
        log.exception("extractor crashed")
        return PermanentError(
            f"the {name} extractor failed on {file.name}: {type(exc).__name__}: {exc}",
            kind=ErrorKind.INTERNAL,
            code="extractor_crashed",
            hint="Report this with the document if you can share it; retry the task after a fix.",
        )


def estimate(job: Job, inputs: Sequence[SourceFile], settings: object) -> Estimate:
    """One model call per document; tokens are not known before reading (the cost module prices pages)."""
    return Estimate(items=len(inputs))


KIND = register(
    Kind(
        name="extract",
        settings_model=ExtractSettings,
        fan_out=fan_out,
        handle=handle,
        function="extract",
        unit="documents",
        quota="model",  # topology.yaml model_quota (SLUICE_MODEL_RPM), shared by every model-calling kind
        circuit=circuit,
        pacing=pacing,
        estimate=estimate,
        start_message="run.start",
        item_message="task.extract",
    )
)
