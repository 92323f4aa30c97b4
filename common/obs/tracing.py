"""Traces: a span per handled message, continued across messages by W3C trace context.

Every message :class:`~common.service.context.TopologySender` sends carries the
current span as a ``traceparent`` attribute (``00-TRACE-SPAN-FLAGS``);
:func:`~common.service.dispatch.dispatch` opens the handler's span as its
child. So one operation -- an API call or ``sluice run``, the imports, the run
initializer, every extraction task and the exports -- is one trace, whichever
function and instance handled each step.

**One operation, one trace id.** The trace id of an operation's work is
derived from the operation id (:func:`operation_trace_id`: the first 16 bytes
of its SHA-256), so every span and log line of one operation -- whichever
function, instance or retry handled it, and however its messages were sent
(scheduled, re-sent, replayed) -- shares it, and an operator finds the trace
from the operation id alone. A message of an operation whose sender was in
another trace (an API request, ``sluice run``) continues under the
operation's root (:func:`operation_root`, a span id derived the same way).

Two modes, chosen by :func:`configure`:

- **ids only** (the default; nothing configured): spans are ids in a context
  variable. The trace and span ids still ride on every message and log line
  (Cloud Logging groups a trace's lines), and no OpenTelemetry module is
  imported: a cold start pays nothing for tracing.
- **recording**: OpenTelemetry's SDK, imported on :func:`configure`, records the
  spans and exports them -- Cloud Trace in the cloud
  (``opentelemetry-exporter-gcp-trace``), the console or OTLP locally, or an
  in-memory exporter in tests. New traces are sampled by ratio; continued
  traces follow their parent's decision.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
from collections.abc import Iterator, Mapping, MutableMapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from common.core.errors import ConfigError
from common.obs.logging import log_context

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter
    from opentelemetry.trace import Tracer

TRACEPARENT = "traceparent"
# The bare trace id attribute older senders (and the Pub/Sub adapter) set.
TRACE_ID = "trace_id"

Exporter = Literal["none", "memory", "console", "otlp", "cloud"]
SpanKindName = Literal["internal", "server", "client", "producer", "consumer"]
AttributeValue = str | bool | int | float

_TRACEPARENT_RE = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
_HEX32 = re.compile(r"[0-9a-f]{32}")
_ZERO_TRACE = "0" * 32
_ZERO_SPAN = "0" * 16


@dataclass(frozen=True)
class SpanRef:
    """A span's identity: what travels in a message's ``traceparent``."""

    trace_id: str  # 32 lowercase hex digits
    span_id: str  # 16 lowercase hex digits
    sampled: bool = True

    @property
    def traceparent(self) -> str:
        return f"00-{self.trace_id}-{self.span_id}-{'01' if self.sampled else '00'}"


def new_trace_id() -> str:
    return os.urandom(16).hex()


def operation_trace_id(operation_id: str) -> str:
    """The W3C trace id of an operation's work: the first 16 bytes of SHA-256 of its id."""
    return hashlib.sha256(operation_id.encode()).digest()[:16].hex()


def operation_root(operation_id: str) -> SpanRef:
    """The operation's root span: its trace id, and a span id derived from the same digest.

    Sampling is decided from the trace id alone (as OpenTelemetry's ratio
    sampler does), so every function agrees on it without being told.
    """
    digest = hashlib.sha256(operation_id.encode()).digest()
    trace_id = digest[:16].hex()
    span_id = digest[16:24].hex()
    if span_id == _ZERO_SPAN:  # pragma: no cover - one digest in 2**64
        span_id = "0" * 15 + "1"
    return SpanRef(trace_id, span_id, sampled=_samples(trace_id))


def _samples(trace_id: str) -> bool:
    if _state.tracer is None:
        return False  # ids only: nothing is recorded
    return int(trace_id[16:], 16) < round(_state.sample_ratio * 2**64)


def within_operation(parent: SpanRef | None, operation_id: str | None) -> SpanRef | None:
    """The parent for work of ``operation_id``: ``parent`` when it is already in the
    operation's trace, else the operation's root (no operation: ``parent``)."""
    if operation_id is None:
        return parent
    if parent is not None and parent.trace_id == operation_trace_id(operation_id):
        return parent
    return operation_root(operation_id)


def new_span_id() -> str:
    return os.urandom(8).hex()


def parse_traceparent(value: str | None) -> SpanRef | None:
    """A W3C ``traceparent`` header's span, or None if absent or malformed."""
    if not value:
        return None
    m = _TRACEPARENT_RE.fullmatch(value.strip().lower())
    if m is None:
        return None
    version, trace_id, span_id, flags = m.groups()
    if version == "ff" or trace_id == _ZERO_TRACE or span_id == _ZERO_SPAN:
        return None
    return SpanRef(trace_id, span_id, sampled=bool(int(flags, 16) & 1))


def extract(attributes: Mapping[str, str]) -> SpanRef | None:
    """The remote parent a message names: its ``traceparent``, else a bare ``trace_id``.

    A bare trace id (a sender that knows no spans) continues that trace under a
    stand-in parent span id, so the handler's span still joins the trace.
    """
    ref = parse_traceparent(attributes.get(TRACEPARENT))
    if ref is not None:
        return ref
    legacy = attributes.get(TRACE_ID, "").lower()
    if _HEX32.fullmatch(legacy) and legacy != _ZERO_TRACE:
        return SpanRef(legacy, new_span_id(), sampled=True)
    return None


_current: ContextVar[SpanRef | None] = ContextVar("sluice_span", default=None)


def current() -> SpanRef | None:
    """The span open in this context (thread, task), if any."""
    return _current.get()


def inject(attributes: MutableMapping[str, str], *, operation_id: str | None = None) -> None:
    """Put the current span on outgoing message attributes (no-op outside a span
    and operation). A message of ``operation_id`` carries the operation's trace."""
    ref = within_operation(_current.get(), operation_id)
    if ref is not None:
        attributes[TRACEPARENT] = ref.traceparent
        attributes[TRACE_ID] = ref.trace_id


class Span:
    """The handle :func:`span` yields: ids, plus attributes and status when recording."""

    def __init__(self, ref: SpanRef, recording: Any = None) -> None:
        self.ref = ref
        self._otel = recording

    @property
    def trace_id(self) -> str:
        return self.ref.trace_id

    @property
    def span_id(self) -> str:
        return self.ref.span_id

    @property
    def recording(self) -> bool:
        return self._otel is not None and bool(self._otel.is_recording())

    def set_attribute(self, key: str, value: AttributeValue) -> None:
        if self._otel is not None:
            self._otel.set_attribute(key, value)

    def set_error(self, description: str) -> None:
        """Mark the span failed (an outcome that is not an exception escaping it)."""
        if self._otel is not None:
            from opentelemetry.trace import Status, StatusCode

            self._otel.set_status(Status(StatusCode.ERROR, description))


class _State:
    def __init__(self) -> None:
        self.provider: TracerProvider | None = None
        self.tracer: Tracer | None = None
        self.exporter: SpanExporter | None = None
        self.sample_ratio: float = 1.0


_state = _State()
_lock = threading.Lock()


def enabled() -> bool:
    """True when spans are recorded (an SDK pipeline is configured)."""
    return _state.tracer is not None


def configure(
    exporter: Exporter | str = "none",
    *,
    project: str | None = None,
    sample_ratio: float = 1.0,
    service_name: str = "sluice",
) -> SpanExporter | None:
    """Install the span pipeline for this process; returns the exporter.

    ``none`` keeps ids-only mode (imports nothing). ``memory`` (tests) and
    ``console`` export each span as it ends; ``otlp`` (``OTEL_EXPORTER_OTLP_*``
    variables) and ``cloud`` (Cloud Trace of ``project``) export in batches.
    Calling it again replaces the pipeline (the old one is flushed and shut down).
    """
    if exporter == "none":
        reset()
        return None
    if not 0.0 <= sample_ratio <= 1.0:
        raise ConfigError(f"trace sample ratio {sample_ratio} is not between 0 and 1")
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

    span_exporter: SpanExporter
    processor: SpanProcessor
    if exporter == "memory":
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

        span_exporter = InMemorySpanExporter()
        processor = SimpleSpanProcessor(span_exporter)
    elif exporter == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        span_exporter = ConsoleSpanExporter()
        processor = SimpleSpanProcessor(span_exporter)
    elif exporter == "otlp":
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        except ImportError:
            raise ConfigError(
                "the otlp trace exporter is not installed",
                hint="pip install opentelemetry-exporter-otlp-proto-http, or use SLUICE_TRACE_EXPORTER=console.",
            ) from None
        span_exporter = OTLPSpanExporter()
        processor = BatchSpanProcessor(span_exporter)
    elif exporter == "cloud":
        if not project:
            raise ConfigError("Cloud Trace needs a project", hint="Set SLUICE_PROJECT.")
        try:
            from opentelemetry.exporter.cloud_trace import CloudTraceSpanExporter
        except ImportError:
            raise ConfigError(
                "the Cloud Trace exporter is not installed",
                hint="Install the gcp extra (opentelemetry-exporter-gcp-trace).",
            ) from None
        span_exporter = CloudTraceSpanExporter(project_id=project)  # type: ignore[no-untyped-call]
        processor = BatchSpanProcessor(span_exporter)
    else:
        raise ConfigError(f"unknown trace exporter {exporter!r}", hint="Use none, memory, console, otlp or cloud.")
    provider = TracerProvider(
        resource=Resource.create({"service.name": service_name}),
        sampler=ParentBased(TraceIdRatioBased(sample_ratio)),
    )
    provider.add_span_processor(processor)
    with _lock:
        old = _state.provider
        _state.provider = provider
        _state.tracer = provider.get_tracer("sluice")
        _state.exporter = span_exporter
        _state.sample_ratio = sample_ratio
    if old is not None:
        old.shutdown()
    return span_exporter


def reset() -> None:
    """Back to ids-only mode (flushing and shutting down any pipeline)."""
    with _lock:
        old = _state.provider
        _state.provider = _state.tracer = _state.exporter = None
    if old is not None:
        old.shutdown()


def flush(timeout_ms: int = 5_000) -> bool:
    """Export what is buffered (before an instance may be frozen); True if done in time."""
    provider = _state.provider
    return True if provider is None else bool(provider.force_flush(timeout_ms))


_CURRENT: Literal["current"] = "current"


@contextmanager
def span(
    name: str,
    *,
    parent: SpanRef | Literal["current"] | None = _CURRENT,
    attributes: Mapping[str, AttributeValue] | None = None,
    kind: SpanKindName = "internal",
) -> Iterator[Span]:
    """Open a span (a child of ``parent``: by default the current span; None: a new trace).

    Inside the block the span is current (messages sent carry it) and log lines
    carry its ``trace_id`` and ``span_id``. An exception escaping the block is
    recorded on the span and re-raised.
    """
    parent_ref = _current.get() if parent == _CURRENT else parent
    tracer = _state.tracer
    if tracer is None:
        if parent_ref is None:
            ref = SpanRef(new_trace_id(), new_span_id(), sampled=False)
        else:
            ref = SpanRef(parent_ref.trace_id, new_span_id(), parent_ref.sampled)
        with _activate(ref):
            yield Span(ref)
        return
    from opentelemetry import context as otel_context
    from opentelemetry import trace

    ctx: otel_context.Context | None
    if parent_ref is not None:
        remote = trace.SpanContext(
            trace_id=int(parent_ref.trace_id, 16),
            span_id=int(parent_ref.span_id, 16),
            is_remote=True,
            trace_flags=trace.TraceFlags(trace.TraceFlags.SAMPLED if parent_ref.sampled else 0),
        )
        ctx = trace.set_span_in_context(trace.NonRecordingSpan(remote), otel_context.Context())
    elif parent == _CURRENT:
        ctx = None  # whatever OpenTelemetry holds as current (another library's span)
    else:
        ctx = otel_context.Context()  # explicitly a new trace
    with tracer.start_as_current_span(
        name, context=ctx, kind=getattr(trace.SpanKind, kind.upper()), attributes=dict(attributes or {})
    ) as otel_span:
        sc = otel_span.get_span_context()
        ref = SpanRef(format(sc.trace_id, "032x"), format(sc.span_id, "016x"), sc.trace_flags.sampled)
        with _activate(ref):
            yield Span(ref, otel_span)


@contextmanager
def _activate(ref: SpanRef) -> Iterator[None]:
    token = _current.set(ref)
    try:
        with log_context(trace_id=ref.trace_id, span_id=ref.span_id, trace_sampled="1" if ref.sampled else "0"):
            yield
    finally:
        _current.reset(token)
