"""Operator metrics: stage runtime, failures, model tokens and queue age.

Instruments (OpenTelemetry metrics API; names as exported to Prometheus):

- ``sluice.stage.duration`` (histogram, s; ``sluice_stage_duration_seconds``):
  one observation per handled message; ``function``, ``kind``, ``outcome``
  (done / retry / failed).
- ``sluice.stage.failures`` (counter; ``sluice_stage_failures_total``): messages
  that were not done; ``function``, ``kind``, ``outcome``, ``error_class`` (the
  error's code, or the exception's type for an unexpected one).
- ``sluice.model.tokens`` (counter; ``sluice_model_tokens_total``): tokens a
  model call consumed; ``model``, ``direction`` (input / output).
- ``sluice.queue.age`` (histogram, s; ``sluice_queue_age_seconds``): how long a
  message waited between becoming deliverable and its handler starting;
  ``function``, ``kind``.
- ``sluice.api.requests`` (counter; ``sluice_api_requests_total``) and
  ``sluice.api.request.duration`` (histogram, s;
  ``sluice_api_request_duration_seconds``): API requests by ``route`` (the
  route's template, ``/v1/jobs/{job_id}``, never the raw path: bounded),
  ``method`` and ``status`` (the HTTP status code).

Nothing is recorded, and no OpenTelemetry module imported, until
:func:`configure` installs a pipeline: ``cloud`` exports to Cloud Monitoring
(``opentelemetry-exporter-gcp-monitoring``) once a minute; ``prometheus``
keeps the values in memory for :func:`prometheus_text`, the exposition the
local API serves at ``/metrics``; ``memory`` is the same, for tests.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

from common.core.errors import ConfigError

if TYPE_CHECKING:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

Exporter = Literal["none", "prometheus", "memory", "console", "cloud"]

STAGE_DURATION = "sluice.stage.duration"
STAGE_FAILURES = "sluice.stage.failures"
MODEL_TOKENS = "sluice.model.tokens"
QUEUE_AGE = "sluice.queue.age"
API_REQUESTS = "sluice.api.requests"
API_DURATION = "sluice.api.request.duration"

# Prometheus text exposition format, version 0.0.4.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# Seconds: quick handlers to the 540 s function timeout; queue waits to an hour.
_DURATION_BOUNDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 540)
_AGE_BOUNDS = (0.1, 0.5, 1, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
# API latency: most answers in milliseconds; uploads and SSE set-up in seconds.
_API_BOUNDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class _State:
    def __init__(self) -> None:
        self.provider: MeterProvider | None = None
        self.reader: InMemoryMetricReader | None = None
        self.duration: Any = None
        self.failures: Any = None
        self.tokens: Any = None
        self.queue_age: Any = None
        self.api_requests: Any = None
        self.api_duration: Any = None


_state = _State()
_lock = threading.Lock()


def enabled() -> bool:
    return _state.provider is not None


def configure(
    exporter: Exporter | str = "none",
    *,
    project: str | None = None,
    export_interval_s: float = 60.0,
    service_name: str = "sluice",
) -> None:
    """Install the metrics pipeline for this process (again: replace it)."""
    if exporter == "none":
        reset()
        return
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader, MetricReader, PeriodicExportingMetricReader
    from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation, View
    from opentelemetry.sdk.resources import Resource

    reader: MetricReader
    memory: InMemoryMetricReader | None = None
    if exporter in ("prometheus", "memory"):
        reader = memory = InMemoryMetricReader()
    elif exporter == "console":
        from opentelemetry.sdk.metrics.export import ConsoleMetricExporter

        reader = PeriodicExportingMetricReader(ConsoleMetricExporter(), export_interval_millis=export_interval_s * 1000)
    elif exporter == "cloud":
        if not project:
            raise ConfigError("Cloud Monitoring needs a project", hint="Set SLUICE_PROJECT.")
        try:
            from opentelemetry.exporter.cloud_monitoring import CloudMonitoringMetricsExporter
        except ImportError:
            raise ConfigError(
                "the Cloud Monitoring exporter is not installed",
                hint="Install the gcp extra (opentelemetry-exporter-gcp-monitoring).",
            ) from None
        # A unique label per instance: many instances write the same series otherwise.
        cloud = CloudMonitoringMetricsExporter(project_id=project, add_unique_identifier=True)
        reader = PeriodicExportingMetricReader(cloud, export_interval_millis=export_interval_s * 1000)
    else:
        raise ConfigError(f"unknown metrics exporter {exporter!r}", hint="Use none, prometheus, console or cloud.")
    provider = MeterProvider(
        metric_readers=[reader],
        resource=Resource.create({"service.name": service_name}),
        views=[
            View(instrument_name=STAGE_DURATION, aggregation=ExplicitBucketHistogramAggregation(_DURATION_BOUNDS)),
            View(instrument_name=QUEUE_AGE, aggregation=ExplicitBucketHistogramAggregation(_AGE_BOUNDS)),
            View(instrument_name=API_DURATION, aggregation=ExplicitBucketHistogramAggregation(_API_BOUNDS)),
        ],
    )
    meter = provider.get_meter("sluice")
    with _lock:
        old = _state.provider
        _state.provider = provider
        _state.reader = memory
        _state.duration = meter.create_histogram(STAGE_DURATION, unit="s", description="Time to handle one message")
        _state.failures = meter.create_counter(STAGE_FAILURES, description="Messages not done, by error class")
        _state.tokens = meter.create_counter(MODEL_TOKENS, description="Model tokens consumed")
        _state.queue_age = meter.create_histogram(
            QUEUE_AGE, unit="s", description="Wait between a message becoming deliverable and its handling"
        )
        _state.api_requests = meter.create_counter(API_REQUESTS, description="API requests by route template")
        _state.api_duration = meter.create_histogram(
            API_DURATION, unit="s", description="Time to answer one API request"
        )
    if old is not None:
        old.shutdown()


def reset() -> None:
    with _lock:
        old = _state.provider
        _state.provider = _state.reader = None
        _state.duration = _state.failures = _state.tokens = _state.queue_age = None
        _state.api_requests = _state.api_duration = None
    if old is not None:
        old.shutdown()


def flush(timeout_ms: int = 5_000) -> bool:
    provider = _state.provider
    return True if provider is None else bool(provider.force_flush(timeout_ms))


def record_delivery(
    function: str,
    kind: str,
    *,
    outcome: str,
    seconds: float,
    error_class: str | None = None,
    queue_age_s: float | None = None,
) -> None:
    """One handled message: its runtime, its failure (if not done) and its queue age."""
    duration = _state.duration
    if duration is None:
        return
    labels = {"function": function, "kind": kind}
    duration.record(max(0.0, seconds), {**labels, "outcome": outcome})
    if outcome != "done":
        _state.failures.add(1, {**labels, "outcome": outcome, "error_class": error_class or "unknown"})
    if queue_age_s is not None:
        _state.queue_age.record(max(0.0, queue_age_s), labels)


def record_tokens(model: str, *, input_tokens: int | None, output_tokens: int | None) -> None:
    """Tokens one model call consumed (None: the model did not say)."""
    tokens = _state.tokens
    if tokens is None:
        return
    if input_tokens:
        tokens.add(input_tokens, {"model": model, "direction": "input"})
    if output_tokens:
        tokens.add(output_tokens, {"model": model, "direction": "output"})


def record_request(route: str, method: str, status: int, *, seconds: float) -> None:
    """One API request: ``route`` is its template (bounded), never the raw path."""
    requests = _state.api_requests
    if requests is None:
        return
    labels = {"route": route, "method": method, "status": str(status)}
    requests.add(1, labels)
    _state.api_duration.record(max(0.0, seconds), labels)


# -- Prometheus text exposition ------------------------------------------------


def prometheus_text() -> str:
    """The current values in Prometheus' text format (empty unless ``prometheus``/``memory``)."""
    reader = _state.reader
    if reader is None:
        return ""
    data = reader.get_metrics_data()
    lines: list[str] = []
    for rm in data.resource_metrics if data is not None else ():
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                lines.extend(_render(metric.name, metric.description or "", metric.unit or "", metric.data))
    return "\n".join(lines) + ("\n" if lines else "")


def _render(name: str, description: str, unit: str, data: Any) -> Iterable[str]:
    from opentelemetry.sdk.metrics.export import Gauge, Histogram, Sum

    base = name.replace(".", "_").replace("-", "_")
    if unit == "s":
        base += "_seconds"
    if isinstance(data, Histogram):
        yield f"# HELP {base} {_help(description)}"
        yield f"# TYPE {base} histogram"
        for hpoint in data.data_points:
            labels = dict(hpoint.attributes or {})
            cumulative = 0
            for bound, count in zip((*hpoint.explicit_bounds, math.inf), hpoint.bucket_counts, strict=True):
                cumulative += count
                yield f"{base}_bucket{_labels(labels, le=_number(bound))} {cumulative}"
            yield f"{base}_sum{_labels(labels)} {_number(hpoint.sum)}"
            yield f"{base}_count{_labels(labels)} {hpoint.count}"
    elif isinstance(data, Sum):
        monotonic = data.is_monotonic
        full = f"{base}_total" if monotonic else base
        yield f"# HELP {full} {_help(description)}"
        yield f"# TYPE {full} {'counter' if monotonic else 'gauge'}"
        for point in data.data_points:
            yield f"{full}{_labels(dict(point.attributes or {}))} {_number(point.value)}"
    elif isinstance(data, Gauge):
        yield f"# HELP {base} {_help(description)}"
        yield f"# TYPE {base} gauge"
        for point in data.data_points:
            yield f"{base}{_labels(dict(point.attributes or {}))} {_number(point.value)}"


def _help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _escape(value: object) -> str:
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(labels: Mapping[str, object], **extra: str) -> str:
    items: Sequence[tuple[str, object]] = [*sorted(labels.items()), *extra.items()]
    if not items:
        return ""
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in items) + "}"


def _number(value: float) -> str:
    if value == math.inf:
        return "+Inf"
    if isinstance(value, float) and value.is_integer():
        return str(int(value)) if abs(value) < 1e15 else repr(value)
    return repr(value) if isinstance(value, float) else str(value)
