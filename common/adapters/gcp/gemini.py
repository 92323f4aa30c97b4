"""Gemini on Vertex AI as a model-port adapter.

One ``generateContent`` call per document (per part, for documents beyond the
model's limits): a system instruction with the extraction rules, the job's
fields and prompt as text, the document as a file part (``gs://`` URIs by
reference, other backends' bytes inline), JSON mode with a response schema.
The answer is checked by :mod:`common.adapters.gcp.gemini_schema`.

Failures are classified for Sluice's retry policy, which alone decides on
retries: the client is told never to retry (``HttpRetryOptions(attempts=1)``),
or attempts would multiply (client retries x policy retries).

google-genai takes most of a second to import, so it is imported on the
first call, never when this module is imported; the client is built once per
extractor and reused (the composition root keeps one extractor per process).
"""

from __future__ import annotations

import importlib
import io
import logging
import math
import mimetypes
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import IO, TYPE_CHECKING, Any, BinaryIO, Protocol, cast

from common.adapters.gcp.gemini_schema import (
    PROMPT_VERSION,
    SYSTEM_INSTRUCTION,
    Answer,
    parse_answer,
    response_schema,
    user_text,
)
from common.adapters.lazy import Lazy
from common.core.errors import (
    BlobNotFound,
    ErrorKind,
    MalformedModelOutput,
    PermanentError,
    RetryableError,
    SluiceError,
    UnreadableDocument,
)
from common.core.retry import MAX_SERVER_DELAY_S, parse_retry_after
from common.core.schema import DocumentExtraction, FieldSpec, FieldValue
from common.ports.blobs import BlobStore
from common.ports.breaker import CircuitBreaker
from common.ports.clock import Clock
from common.ports.extractor import DocumentRef
from common.runtime.model_gateway import KEPT_ONLY_HEADER

if TYPE_CHECKING:  # pragma: no cover
    from google import genai
    from pypdf import PdfReader

__all__ = [
    "MAX_SERVER_DELAY_S",
    "PROMPT_VERSION",
    "GeminiExtractor",
    "RateLimiter",
    "build_vertex_client",
    "classify_vertex_error",
    "server_delay",
]

log = logging.getLogger(__name__)
MODEL_CONFIDENCE = 0.9  # the model gives no calibrated confidence; a fixed, honest "probably right"
PDF = "application/pdf"
# Finish reasons that mean the model refused the content: retrying gives the same refusal.
_BLOCKED = {"SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "IMAGE_SAFETY", "LANGUAGE"}
_HARM_CATEGORIES = (
    "HARM_CATEGORY_HATE_SPEECH",
    "HARM_CATEGORY_DANGEROUS_CONTENT",
    "HARM_CATEGORY_HARASSMENT",
    "HARM_CATEGORY_SEXUALLY_EXPLICIT",
)


class RateLimiter(Protocol):
    """What the extractor needs of a shared limiter (common.service.leased_ratelimit.LeasedRateLimiter)."""

    def acquire(self, cost: float = 1.0) -> object:
        """Return once a call may go; raise RetryableError(RATE_LIMITED) otherwise."""
        ...

    def penalise(self, *, duration_s: float | None = None) -> None: ...


@dataclass(frozen=True)
class _Part:
    """One model call's worth of document: the whole of it, or a page range."""

    uri: str
    first_page: int  # 1-based page of the original where this part starts
    pages: int | None  # pages in this part, when known


def _pool_limits(connections: int) -> Any:
    """The HTTP client's connection pool, as large as the calls a process makes at once.

    Its default holds 100 connections: the 101st concurrent call waits for a
    free one (model calls take seconds), capping a process that runs many
    extractions at once far below its workers. google-genai runs on httpx2
    when installed, else httpx; it picks the backend these limits belong to.
    """
    try:
        http: Any = importlib.import_module("httpx2")
    except ImportError:
        http = importlib.import_module("httpx")
    return http.Limits(max_connections=connections, max_keepalive_connections=connections)


class GeminiExtractor:
    name = "gemini"
    dependency = "vertex"  # the circuit breaker guarding its calls

    def __init__(
        self,
        *,
        project: str,
        location: str,
        model: str,
        blobs: BlobStore,
        clock: Clock,
        limiter: RateLimiter | None = None,
        breaker: CircuitBreaker | None = None,
        max_pages: int = 1000,
        max_bytes: int = 50 * 1024 * 1024,
        pages_per_part: int | None = None,
        timeout_s: float = 300.0,
        credentials: Any = None,
        http_base_url: str | None = None,
        client_factory: Callable[[], genai.Client] | None = None,
        ask_gateway_first: bool = False,
        max_connections: int = 1000,
    ) -> None:
        """``credentials`` None: Application Default Credentials, resolved by the
        client on first use. ``http_base_url`` points the client elsewhere
        (a test's fake server). ``pages_per_part`` (default ``max_pages``) is
        the size of the page ranges a too-large PDF is split into."""
        if max_pages < 1 or max_bytes < 1:
            raise ValueError("max_pages and max_bytes must be positive")
        self.project = project
        self.location = location
        self.model = model
        self._blobs = blobs
        self._clock = clock
        self._limiter = limiter
        self._breaker = breaker
        self.max_pages = max_pages
        self.max_bytes = max_bytes
        self.pages_per_part = min(pages_per_part or max_pages, max_pages)
        self._timeout_s = timeout_s
        self._max_connections = max_connections
        self._credentials = credentials
        self._base_url = http_base_url
        self._client = Lazy(client_factory or self._build_client)
        # Calls go through a supervisor's model gateway: ask it first for a kept answer.
        self._ask_kept = ask_gateway_first

    # -- the client -------------------------------------------------------------

    def _build_client(self) -> genai.Client:
        return build_vertex_client(
            project=self.project,
            location=self.location,
            credentials=self._credentials,
            base_url=self._base_url,
            timeout_s=self._timeout_s,
            max_connections=self._max_connections,
        )

    # -- the port ---------------------------------------------------------------

    def warm(self) -> None:
        """Import google-genai and pypdf and build the client now (a worker
        starting), not in the first document's handler: the import takes most
        of a second and holds the import lock every other handler then waits on."""
        importlib.import_module("google.genai.types")
        importlib.import_module("pypdf")
        self._client.get()

    def turn(self) -> float | None:
        """Seconds until the quota has room for another document (its turn
        booked), or None: go now. See ``LeasedRateLimiter.turn``."""
        turn = getattr(self._limiter, "turn", None)
        return turn() if callable(turn) else None

    def extract(self, doc: DocumentRef, fields: Sequence[FieldSpec], *, prompt: str = "") -> DocumentExtraction:
        if not fields:
            raise PermanentError("the job has no fields to extract", hint="Give the job at least one field.")
        mime = _mime_type(doc)
        if mime == PDF:
            from_xml = self._einvoice(doc, fields)
            if from_xml is not None:
                return from_xml
        parts, total_pages, inline = self._plan(doc, mime)
        if len(parts) == 1:
            return self._extract_part(parts[0], mime, fields, prompt, inline=inline)
        results = [self._extract_part(p, PDF, fields, prompt, inline=None) for p in parts]
        return _merge(parts, results, total_pages or 0)

    # -- one call ---------------------------------------------------------------

    def _extract_part(
        self,
        part: _Part,
        mime: str,
        fields: Sequence[FieldSpec],
        prompt: str,
        *,
        inline: bytes | None,
    ) -> DocumentExtraction:
        from google.genai import types

        if part.uri.startswith("gs://"):
            doc_part = types.Part.from_uri(file_uri=part.uri, mime_type=mime)
        else:
            # Not in Cloud Storage (the embedded backend's local://): Vertex AI
            # cannot fetch it, so the bytes travel in the request.
            data = inline if inline is not None else self._read(part.uri)
            doc_part = types.Part.from_bytes(data=data, mime_type=mime)
        config = types.GenerateContentConfig(
            system_instruction=SYSTEM_INSTRUCTION,
            temperature=0.0,  # extraction wants the most likely reading, not variety
            response_mime_type="application/json",
            response_schema=response_schema(fields),
            # Invoices and contracts trip over-eager filters (names, medical
            # terms); block only what is flagged highly likely harmful.
            safety_settings=[
                types.SafetySetting(
                    category=types.HarmCategory(c),
                    threshold=types.HarmBlockThreshold.BLOCK_ONLY_HIGH,
                )
                for c in _HARM_CATEGORIES
            ],
        )
        contents = [types.Content(role="user", parts=[doc_part, types.Part.from_text(text=user_text(fields, prompt))])]

        t0 = time.perf_counter()
        response = self._kept_answer(contents, config) if self._ask_kept else None
        if response is None:
            response = self._call(contents, config)
        latency_ms = round((time.perf_counter() - t0) * 1000, 1)

        raw = _answer_text(response)
        answer = parse_answer(raw, fields, pages=part.pages)
        usage = response.usage_metadata
        output_tokens = None
        if usage is not None and usage.candidates_token_count is not None:
            # Thinking tokens are billed as output; count them with the answer.
            output_tokens = usage.candidates_token_count + (usage.thoughts_token_count or 0)
        return DocumentExtraction(
            columns=answer.columns,
            results=answer.results,
            fields=_first_row_fields(answer),
            row_pages=list(answer.pages),
            pages=part.pages or 0,
            method="gemini",
            model=self.model,
            model_version=response.model_version,
            prompt_version=PROMPT_VERSION,
            input_tokens=usage.prompt_token_count if usage is not None else None,
            output_tokens=output_tokens,
            latency_ms=latency_ms,
            notes=list(answer.notes),
        )

    def _call(self, contents: Any, config: Any) -> Any:
        """One call within the quota and the circuit breaker; its errors classified."""
        if self._limiter is not None:
            self._limiter.acquire()
        if self._breaker is not None:
            self._breaker.admit()  # CircuitOpen while Vertex AI keeps failing: the task waits, refunded
        try:
            response = self._client.get().models.generate_content(model=self.model, contents=contents, config=config)
        except Exception as exc:
            err = self._classify(exc)
            if err is None:
                raise
            if self._breaker is not None:
                self._breaker.record_failure(err)
            raise err from exc
        if self._breaker is not None:
            self._breaker.record_success()
        return response

    def _kept_answer(self, contents: Any, config: Any) -> Any:
        """The answer the supervisor's model gateway kept for this very request (its
        caller, an earlier attempt, was killed), or None: asked before a token of the
        quota is taken, so a retried item spends none on an answer already given."""
        from google.genai import errors, types

        ask = config.model_copy(update={"http_options": types.HttpOptions(headers={KEPT_ONLY_HEADER: "1"})})
        try:
            return self._client.get().models.generate_content(model=self.model, contents=contents, config=ask)
        except errors.ClientError as exc:
            if exc.code != 404:
                log.warning("asking the model gateway for a kept answer failed (%s); calling the model", exc.code)
            return None
        except Exception:  # the call below meets the same failure, classified
            log.warning("asking the model gateway for a kept answer failed; calling the model", exc_info=True)
            return None

    def _einvoice(self, doc: DocumentRef, fields: Sequence[FieldSpec]) -> DocumentExtraction | None:
        """The values of an e-invoice's embedded XML (ZUGFeRD, Factur-X, XRechnung),
        read as the offline path reads them, without calling the model. pypdf
        reads only the attachment tree from a stream, so a gs:// document is
        still not downloaded whole."""
        from pypdf import PdfReader
        from pypdf.errors import PyPdfError

        from common.extraction.offline import einvoice_from_attachments
        from common.extraction.pdfio import MAX_ATTACHMENT_BYTES

        if self._blobs.stat(doc.uri) is None:
            return None  # _plan reports the missing file
        found: list[tuple[str, bytes]] = []
        try:
            with self._blobs.open(doc.uri) as stream:
                for name, contents in PdfReader(stream).attachments.items():
                    if name.lower().endswith(".xml"):
                        found.extend((name, c) for c in contents if 0 < len(c) <= MAX_ATTACHMENT_BYTES)
        except (PyPdfError, ValueError, KeyError, OSError):
            return None  # not readable by pypdf: the model gets the document
        return einvoice_from_attachments(found, fields) if found else None

    def _read(self, uri: str) -> bytes:
        try:
            return self._blobs.get_bytes(uri, max_bytes=self.max_bytes)
        except BlobNotFound:
            raise UnreadableDocument(f"the stored file is missing ({uri})") from None
        except ValueError:
            raise _too_large(uri, self.max_bytes) from None

    # -- errors -----------------------------------------------------------------

    def _classify(self, exc: Exception) -> SluiceError | None:
        return classify_vertex_error(
            exc,
            clock=self._clock,
            limiter=self._limiter,
            not_found_hint=f"Check SLUICE_GEMINI_MODEL ({self.model}) and SLUICE_GEMINI_LOCATION ({self.location}).",
        )

    # -- documents beyond the model's limits ----------------------------------------

    def _plan(self, doc: DocumentRef, mime: str) -> tuple[list[_Part], int | None, bytes | None]:
        """The parts to send, the page count (when known) and, for a small
        document not in Cloud Storage, its bytes (read once, sent inline)."""
        info = self._blobs.stat(doc.uri)
        if info is None:
            raise UnreadableDocument(f"{doc.name}: the stored file is missing ({doc.uri})")
        size = info.size
        in_gcs = doc.uri.startswith("gs://")
        inline = None if in_gcs or size > self.max_bytes else self._read(doc.uri)
        if mime != PDF:
            if size > self.max_bytes:
                raise _too_large(doc.name, self.max_bytes)
            return [_Part(doc.uri, 1, None)], None, inline

        # Page counts need the PDF's page tree; pypdf reads it from a stream
        # without loading the page contents.
        from pypdf import PdfReader
        from pypdf.errors import PyPdfError

        stream: IO[bytes] = io.BytesIO(inline) if inline is not None else self._blobs.open(doc.uri)
        with stream:
            try:
                reader = PdfReader(stream)
                pages = len(reader.pages)
            except (PyPdfError, ValueError, KeyError, OSError) as e:
                # pypdf cannot read it; Gemini may still (or will refuse it
                # with a reason), as long as it needs no splitting.
                if size > self.max_bytes:
                    raise UnreadableDocument(
                        f"{doc.name} is larger than {self.max_bytes // (1024 * 1024)} MB and cannot be split ({e})"
                    ) from None
                return [_Part(doc.uri, 1, None)], None, inline
            if pages <= self.max_pages and size <= self.max_bytes:
                return [_Part(doc.uri, 1, pages)], pages, inline
            n_parts = max(math.ceil(pages / self.pages_per_part), math.ceil(size / self.max_bytes))
            per_part = min(self.pages_per_part, math.ceil(pages / n_parts))
            ranges = [(first, min(pages, first + per_part - 1)) for first in range(1, pages + 1, per_part)]
            parts: list[_Part] = []
            for first, last in ranges:
                parts += self._write_parts(reader, doc, first, last, info.generation)
        log.info(
            "document split for the model",
            extra={"fields": {"document": doc.name, "pages": pages, "bytes": size, "parts": len(parts)}},
        )
        return parts, pages, None

    def _write_parts(self, reader: PdfReader, doc: DocumentRef, first: int, last: int, source: str) -> list[_Part]:
        """Store pages ``first..last`` next to the original as a PDF of their own;
        a range still too large is halved until it fits (a single page that
        does not fit cannot be sent).

        Part names derive from the original's and the range, and carry the
        original's generation (``source``): a retried task reuses the parts
        an earlier attempt stored instead of writing them again.
        """
        from pypdf import PdfWriter

        uri = f"{doc.uri}.parts/pages-{first:05d}-{last:05d}.pdf"
        pages = last - first + 1
        stored = self._blobs.stat(uri)
        if stored is not None and stored.metadata.get("source_generation") == source:
            return [_Part(uri, first, pages)]
        writer = PdfWriter()
        for i in range(first - 1, last):
            writer.add_page(reader.pages[i])
        # Parts are at most max_bytes (50 MB): spill to disk rather than hold them in memory.
        with tempfile.SpooledTemporaryFile(max_size=8 * 1024 * 1024) as buf:
            writer.write(buf)
            size = buf.tell()
            if size > self.max_bytes:
                if first == last:
                    raise UnreadableDocument(
                        f"{doc.name}: page {first} alone is larger than {self.max_bytes // (1024 * 1024)} MB",
                        hint="Reduce the document's image resolution and upload it again.",
                    )
                mid = (first + last) // 2
                return self._write_parts(reader, doc, first, mid, source) + self._write_parts(
                    reader, doc, mid + 1, last, source
                )
            buf.seek(0)
            self._blobs.put_stream(
                uri,
                _as_binary(buf),
                content_type=PDF,
                metadata={"source": doc.uri, "source_generation": source, "pages": f"{first}-{last}"},
            )
        return [_Part(uri, first, pages)]


# -- the Vertex AI client and its errors, shared by every Vertex adapter -----------------


def build_vertex_client(
    *,
    project: str,
    location: str,
    credentials: Any,
    base_url: str | None,
    timeout_s: float,
    max_connections: int = 1000,
) -> genai.Client:
    """A google-genai client for Vertex AI that never retries on its own:
    Sluice's retry policy alone decides, or attempts would multiply."""
    from google import genai
    from google.genai import types

    return genai.Client(
        vertexai=True,
        project=project,
        location=location,
        credentials=credentials,
        http_options=types.HttpOptions(
            base_url=base_url,
            timeout=int(timeout_s * 1000),  # milliseconds
            retry_options=types.HttpRetryOptions(attempts=1),
            client_args={"limits": _pool_limits(max_connections)},
        ),
    )


def guarded_vertex_call(
    fn: Callable[[], Any],
    *,
    clock: Clock,
    limiter: RateLimiter | None,
    breaker: CircuitBreaker | None,
    not_found_hint: str,
) -> Any:
    """One Vertex AI call paced by the shared ``limiter`` and admitted by the
    ``breaker``; a failure is raised as its Sluice error (and counted by the
    breaker), an unknown exception as it is."""
    if limiter is not None:
        limiter.acquire()
    if breaker is not None:
        breaker.admit()
    try:
        result = fn()
    except Exception as exc:
        err = classify_vertex_error(exc, clock=clock, limiter=limiter, not_found_hint=not_found_hint)
        if err is None:
            raise
        if breaker is not None:
            breaker.record_failure(err)
        raise err from exc
    if breaker is not None:
        breaker.record_success()
    return result


def classify_vertex_error(
    exc: Exception, *, clock: Clock, limiter: RateLimiter | None, not_found_hint: str
) -> SluiceError | None:
    """The Sluice error for a failed Vertex AI call (any google-genai method),
    or None for an unknown exception (a bug: the caller records it as an
    internal failure). A 429 also penalises the shared ``limiter``."""
    from google.auth import exceptions as auth_errors
    from google.genai import errors as genai_errors

    if isinstance(exc, genai_errors.APIError):
        return _api_error(exc, clock=clock, limiter=limiter, not_found_hint=not_found_hint)
    if isinstance(exc, auth_errors.DefaultCredentialsError):
        return PermanentError(
            f"no Google credentials for Vertex AI: {exc}",
            kind=ErrorKind.AUTH,
            code="model_auth",
            hint="Run with a service account (or `gcloud auth application-default login` locally).",
        )
    if isinstance(exc, auth_errors.RefreshError) and not getattr(exc, "retryable", False):
        return PermanentError(
            f"the Google credentials were refused: {exc}",
            kind=ErrorKind.AUTH,
            code="model_auth",
            hint="Check the service account exists and is enabled.",
        )
    if isinstance(exc, (auth_errors.TransportError, auth_errors.RefreshError, *_transient_errors())):
        return RetryableError(
            f"could not reach Vertex AI: {type(exc).__name__}: {exc}", kind=ErrorKind.NETWORK, code="model_network"
        )
    return None


def _api_error(exc: Any, *, clock: Clock, limiter: RateLimiter | None, not_found_hint: str) -> SluiceError:
    code = int(exc.code or 0)
    reason = exc.message or exc.status or str(exc)
    what = f"Vertex AI answered {code} {exc.status or ''}".rstrip() + f": {reason}"
    if code == 429:
        delay = server_delay(exc, now=clock.now())
        if limiter is not None:
            # The shared quota is spent whatever our bucket thought: slow everyone down.
            try:
                limiter.penalise(duration_s=delay)
            except Exception:
                # A store hiccup must not hide the 429, which the retry policy needs.
                log.exception("could not penalise the shared rate limiter")
        return RetryableError(what, kind=ErrorKind.RATE_LIMITED, retry_after=delay, code="model_rate_limited")
    if code == 503:
        delay = server_delay(exc, now=clock.now())
        return RetryableError(what, kind=ErrorKind.UNAVAILABLE, retry_after=delay, code="model_unavailable")
    if code >= 500:
        return RetryableError(what, kind=ErrorKind.SERVER, code="model_server_error")
    if code in (408, 499):  # request timeout, cancelled: the call was cut, not refused
        return RetryableError(what, kind=ErrorKind.NETWORK, code="model_network")
    if code in (401, 403):
        return PermanentError(
            what,
            kind=ErrorKind.AUTH,
            code="model_auth",
            hint="Grant the function's service account roles/aiplatform.user and read access to the bucket.",
        )
    if code == 404:
        return PermanentError(
            what,
            code="model_not_found",
            hint=not_found_hint,
        )
    return PermanentError(
        what,
        code="model_rejected_input",
        hint="Vertex AI refused the request; check the document's type and size, then retry the task.",
    )


# -- helpers ------------------------------------------------------------------------------


def server_delay(exc: Any, *, now: datetime) -> float | None:
    """The delay a 429/503 asked for, in seconds, capped at :data:`MAX_SERVER_DELAY_S`.

    From the ``Retry-After`` header (seconds or an HTTP date) and/or the body's
    ``google.rpc.RetryInfo.retryDelay`` (``"30s"``, ``"1.5s"`` or
    ``{"seconds": 30, "nanos": 0}``); with both, the longer wins: both
    are the server's word, and undershooting costs another 429.
    """
    delays: list[float] = []
    headers = getattr(getattr(exc, "response", None), "headers", None)
    header = parse_retry_after(headers.get("retry-after") if headers is not None else None, now=now)
    if header is not None:
        delays.append(header)
    details = exc.details if isinstance(getattr(exc, "details", None), Mapping) else {}
    body = details.get("error", details)
    for item in body.get("details", []) if isinstance(body, Mapping) else []:
        if isinstance(item, Mapping) and str(item.get("@type", "")).endswith("google.rpc.RetryInfo"):
            parsed = _duration(item.get("retryDelay"))
            if parsed is not None:
                delays.append(parsed)
    if not delays:
        return None
    return min(max(0.0, max(delays)), MAX_SERVER_DELAY_S)


def _duration(value: Any) -> float | None:
    """A protobuf Duration in its JSON form ("1.5s") or as a dict."""
    if isinstance(value, str) and value.endswith("s"):
        try:
            return float(value[:-1])
        except ValueError:
            return None
    if isinstance(value, Mapping):
        try:
            return float(value.get("seconds", 0)) + float(value.get("nanos", 0)) / 1e9
        except (TypeError, ValueError):
            return None
    return None


def _transient_errors() -> tuple[type[BaseException], ...]:
    """Transport failures of whichever HTTP library the client runs on."""
    found: list[type[BaseException]] = [TimeoutError, ConnectionError]
    for module, names in (
        ("httpx2", ("TransportError",)),
        ("httpx", ("TransportError",)),
        ("requests", ("ConnectionError", "Timeout")),
    ):
        # A library that is not loaded raised nothing; importing it here would only cost time.
        mod = sys.modules.get(module)
        if mod is not None:
            found += [getattr(mod, n) for n in names if isinstance(getattr(mod, n, None), type)]
    return tuple(found)


def _answer_text(response: Any) -> str:
    """The answer's text, or the error that explains why there is none.

    Read from the parts rather than ``response.text``, which warns when a
    response holds non-text parts (thoughts).
    """
    candidates = response.candidates or []
    if not candidates:
        feedback = response.prompt_feedback
        block = getattr(feedback, "block_reason", None) if feedback is not None else None
        if block is not None:
            raise PermanentError(
                f"Gemini refused the document ({_enum_name(block)})",
                code="model_blocked",
                hint="The document tripped Vertex AI's safety filters; extract it another way.",
            )
        raise MalformedModelOutput("the model gave no answer (no candidates)", raw_output="")
    cand = candidates[0]
    parts = cand.content.parts if cand.content is not None and cand.content.parts else []
    raw = "".join(p.text for p in parts if p.text and not p.thought)
    finish = _enum_name(cand.finish_reason) if cand.finish_reason is not None else None
    if finish in _BLOCKED:
        raise PermanentError(
            f"Gemini stopped answering ({finish})",
            code="model_blocked",
            hint="The document tripped Vertex AI's safety filters; extract it another way.",
        )
    if finish == "MAX_TOKENS":
        raise MalformedModelOutput("the model's answer was cut off at the output token limit", raw_output=raw)
    return raw


def _enum_name(value: Any) -> str:
    return str(getattr(value, "value", value))


def _first_row_fields(answer: Answer) -> dict[str, FieldValue]:
    if not answer.results:
        return {}
    page = answer.pages[0] if answer.pages else None
    return {
        name: FieldValue(value=v, confidence=MODEL_CONFIDENCE, page=page, source="model")
        for name, v in zip(answer.columns, answer.results[0], strict=True)
        if v is not None
    }


def _merge(parts: Sequence[_Part], results: Sequence[DocumentExtraction], total_pages: int) -> DocumentExtraction:
    """One extraction from the parts' extractions: rows in page order, pages of the original."""
    rows: list[list[Any]] = []
    row_pages: list[int | None] = []
    notes: list[str] = []
    page_map: list[str] = []
    for i, (part, ex) in enumerate(zip(parts, results, strict=True), start=1):
        last = part.first_page + (part.pages or 1) - 1
        page_map.append(f"pages {part.first_page}-{last} → part {i}")
        rows += ex.results
        row_pages += [None if p is None else part.first_page + p - 1 for p in ex.row_pages]
        notes += [f"part {i}: {n}" for n in ex.notes]
    first = results[0]
    fields = {}
    if rows:
        fields = {
            name: FieldValue(value=v, confidence=MODEL_CONFIDENCE, page=row_pages[0], source="model")
            for name, v in zip(first.columns, rows[0], strict=True)
            if v is not None
        }
    versions = sorted({ex.model_version for ex in results if ex.model_version})
    return DocumentExtraction(
        columns=first.columns,
        results=rows,
        fields=fields,
        row_pages=row_pages,
        pages=total_pages,
        method="gemini",
        model=first.model,
        model_version=",".join(versions) or None,
        prompt_version=PROMPT_VERSION,
        input_tokens=_sum_int(ex.input_tokens for ex in results),
        output_tokens=_sum_int(ex.output_tokens for ex in results),
        latency_ms=_sum_float(ex.latency_ms for ex in results),
        notes=[f"split into {len(parts)} parts: " + ", ".join(page_map), *notes],
    )


def _sum_int(values: Iterable[int | None]) -> int | None:
    present = [v for v in values if v is not None]
    return sum(present) if present else None


def _sum_float(values: Iterable[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return round(sum(present), 1) if present else None


def _mime_type(doc: DocumentRef) -> str:
    if doc.mime_type and doc.mime_type != "application/octet-stream":
        return doc.mime_type.split(";")[0].strip().lower()
    guessed = mimetypes.guess_type(doc.name)[0]
    return guessed or doc.mime_type or "application/octet-stream"


def _too_large(what: str, max_bytes: int) -> UnreadableDocument:
    return UnreadableDocument(
        f"{what} is larger than {max_bytes // (1024 * 1024)} MB",
        hint="Split the document, or raise SLUICE_MAX_DOCUMENT_BYTES.",
    )


def _as_binary(f: Any) -> BinaryIO:
    """SpooledTemporaryFile is a binary file in all but its declared type."""
    return cast(BinaryIO, f)
