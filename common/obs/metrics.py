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
- ``sluice.circuit.state`` (gauge; ``sluice_circuit_state``): each external
  dependency's circuit breaker as this process last saw it: 0 closed,
  1 half-open, 2 open; ``dependency``.
- ``sluice.api.requests`` (counter; ``sluice_api_requests_total``) and
  ``sluice.api.request.duration`` (histogram, s;
  ``sluice_api_request_duration_seconds``): API requests by ``route`` (the
  route's template, ``/v1/jobs/{job_id}``, never the raw path: bounded),
  ``method`` and ``status`` (the HTTP status code).
- ``sluice.jobs``, ``sluice.runs``, ``sluice.items`` (counters;
  ``sluice_jobs_total``, ``sluice_runs_total``, ``sluice_items_total``): the
  lifecycle events of jobs, runs and their items (an extraction task, an
  export), by ``kind`` (the job's kind: ``extract`` today), ``stage`` (where
  it happened: ``api``, ``extract``, ``export``, ``cleanup``) and ``event``
  (created / started / completed / failed / cancelled / stalled). Recorded
  after the change commits, by :mod:`common.service.lifecycle_events`.
- ``sluice.model.requests`` (counter; ``sluice_model_requests_total``): model
  calls by ``model`` and ``outcome`` (ok / rate_limited / error), and
  ``sluice.model.request_limit`` (gauge; ``sluice_model_request_limit``): the
  configured calls per second per model (``SLUICE_MODEL_RPM`` / 60), the quota
  line drawn over their rate.
- ``sluice.queue.depth``, ``sluice.queue.oldest_age`` (gauges;
  ``sluice_queue_depth``, ``sluice_queue_oldest_age_seconds``) and
  ``sluice.queue.dead_letters`` (gauge; ``sluice_queue_dead_letters``): per
  ``subscription``, read at collection time from the probe the embedded
  runtime registers (:func:`register_queue_probe`). In the cloud, Pub/Sub's
  own metrics in Cloud Monitoring play this part.

Nothing is recorded, and no OpenTelemetry module imported, until
:func:`configure` installs a pipeline: ``cloud`` exports to Cloud Monitoring
(``opentelemetry-exporter-gcp-monitoring``) once a minute; ``prometheus``
keeps the values in memory for :func:`prometheus_text`, the exposition the
local API serves at ``/metrics``; ``memory`` is the same, for tests.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from common.core.errors import ConfigError

if TYPE_CHECKING:
    from opentelemetry.metrics import CallbackOptions, Observation
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

Exporter = Literal["none", "prometheus", "memory", "console", "cloud"]

STAGE_DURATION = "sluice.stage.duration"
STAGE_FAILURES = "sluice.stage.failures"
MODEL_TOKENS = "sluice.model.tokens"
QUEUE_AGE = "sluice.queue.age"
CIRCUIT_STATE = "sluice.circuit.state"
API_REQUESTS = "sluice.api.requests"
API_DURATION = "sluice.api.request.duration"
JOBS = "sluice.jobs"
RUNS = "sluice.runs"
ITEMS = "sluice.items"
MODEL_REQUESTS = "sluice.model.requests"
MODEL_LIMIT = "sluice.model.request_limit"
QUEUE_DEPTH = "sluice.queue.depth"
QUEUE_OLDEST = "sluice.queue.oldest_age"
QUEUE_DEAD_LETTERS = "sluice.queue.dead_letters"

Entity = Literal["job", "run", "item"]
Event = Literal["created", "started", "completed", "failed", "cancelled", "stalled"]
_ENTITY_INSTRUMENT = {"job": JOBS, "run": RUNS, "item": ITEMS}

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
        self.circuit: Any = None
        self.api_requests: Any = None
        self.api_duration: Any = None
        self.lifecycle: dict[str, Any] = {}
        self.model_requests: Any = None


@dataclass(frozen=True)
class QueueStat:
    """One subscription's backlog, as a bus sees it now."""

    subscription: str
    depth: int  # messages not yet acknowledged (ready, delayed or leased)
    oldest_age_s: float  # age of the oldest of them (0 when empty)
    dead_letters: int  # messages dead-lettered from it and not replayed


QueueProbe = Callable[[], Iterable[QueueStat]]

_state = _State()
_lock = threading.Lock()
# Survive reconfiguration: the runtime registers its probe once; limits come from settings.
_queue_probes: list[QueueProbe] = []
_model_limits: dict[str, float] = {}


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
        _state.circuit = meter.create_gauge(
            CIRCUIT_STATE, description="Circuit breaker per dependency: 0 closed, 1 half-open, 2 open"
        )
        _state.api_requests = meter.create_counter(API_REQUESTS, description="API requests by route template")
        _state.api_duration = meter.create_histogram(
            API_DURATION, unit="s", description="Time to answer one API request"
        )
        _state.lifecycle = {
            name: meter.create_counter(name, description=f"Lifecycle events of {entity}s by kind, stage and event")
            for entity, name in _ENTITY_INSTRUMENT.items()
        }
        _state.model_requests = meter.create_counter(MODEL_REQUESTS, description="Model calls by outcome")
        meter.create_observable_gauge(
            MODEL_LIMIT, callbacks=[_observe_limits], description="Configured model calls per second (the quota)"
        )
        for name, unit, description in (
            (QUEUE_DEPTH, "", "Messages not yet acknowledged, per subscription"),
            (QUEUE_OLDEST, "s", "Age of the oldest unacknowledged message, per subscription"),
            (QUEUE_DEAD_LETTERS, "", "Messages dead-lettered from the subscription and not replayed"),
        ):
            meter.create_observable_gauge(name, callbacks=[_queue_callback(name)], unit=unit, description=description)
    if old is not None:
        old.shutdown()


def reset() -> None:
    with _lock:
        old = _state.provider
        _state.provider = _state.reader = None
        _state.duration = _state.failures = _state.tokens = _state.queue_age = _state.circuit = None
        _state.api_requests = _state.api_duration = _state.model_requests = None
        _state.lifecycle = {}
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
    # Adding 0 still creates the series: a model that reports no usage shows as 0, not as absent.
    tokens.add(input_tokens or 0, {"model": model, "direction": "input"})
    tokens.add(output_tokens or 0, {"model": model, "direction": "output"})


def record_request(route: str, method: str, status: int, *, seconds: float) -> None:
    """One API request: ``route`` is its template (bounded), never the raw path."""
    requests = _state.api_requests
    if requests is None:
        return
    labels = {"route": route, "method": method, "status": str(status)}
    requests.add(1, labels)
    _state.api_duration.record(max(0.0, seconds), labels)


def record_lifecycle(entity: Entity, event: Event, *, kind: str, stage: str, count: int = 1) -> None:
    """``count`` jobs, runs or items went through ``event`` (after the change committed)."""
    counter = _state.lifecycle.get(_ENTITY_INSTRUMENT[entity])
    if counter is None or count <= 0:
        return
    counter.add(count, {"kind": kind, "stage": stage, "event": event})


def record_model_request(model: str, outcome: Literal["ok", "rate_limited", "error"]) -> None:
    counter = _state.model_requests
    if counter is not None:
        counter.add(1, {"model": model, "outcome": outcome})


def set_model_limit(model: str, per_second: float) -> None:
    """The configured call rate of ``model`` (exposed as the quota line)."""
    _model_limits[model] = per_second


def register_queue_probe(probe: QueueProbe) -> Callable[[], None]:
    """Read queue depth, oldest age and dead letters from ``probe`` at each collection; returns its removal."""
    _queue_probes.append(probe)
    return lambda: _queue_probes.remove(probe) if probe in _queue_probes else None


def _observe_limits(_options: CallbackOptions) -> Iterable[Observation]:
    from opentelemetry.metrics import Observation

    return [Observation(rps, {"model": model}) for model, rps in sorted(_model_limits.items())]


def _queue_callback(name: str) -> Callable[[CallbackOptions], Iterable[Observation]]:
    def observe(_options: CallbackOptions) -> Iterable[Observation]:
        from opentelemetry.metrics import Observation

        out = []
        for probe in list(_queue_probes):
            for stat in probe():
                value = {
                    QUEUE_DEPTH: stat.depth,
                    QUEUE_OLDEST: stat.oldest_age_s,
                    QUEUE_DEAD_LETTERS: stat.dead_letters,
                }[name]
                out.append(Observation(value, {"subscription": stat.subscription}))
        return out

    return observe


def set_circuit_state(dependency: str, value: int) -> None:
    """A dependency's breaker as last seen (see :class:`common.core.breaker.CircuitState`)."""
    circuit = _state.circuit
    if circuit is not None:
        circuit.set(value, {"dependency": dependency})


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
