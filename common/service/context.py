"""What a handler is given: long-lived dependencies and the current delivery."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from common.config import Settings
from common.core.breaker import BreakerConfig
from common.core.errors import ConfigError
from common.core.messages import Message
from common.core.models import Priority
from common.core.retry import RetryPolicy
from common.obs import tracing
from common.obs.logging import current_context
from common.ports.blobs import BlobStore
from common.ports.bus import Publisher
from common.ports.clock import Clock
from common.ports.embedder import Embedder
from common.ports.extractor import Extractor, Warmable
from common.ports.google import Drive, ExportDestinations, GoogleAuth
from common.ports.queues import Queues
from common.ports.scheduler import Scheduler
from common.ports.search_index import SearchIndex
from common.ports.sheets import Sheets
from common.ports.store import Store
from common.ports.textmodel import TextModel
from common.service import ids
from common.service.breaker import Breakers, StoreCircuitBreaker
from common.service.coalesce import ProgressGate
from common.topology import Topology

# Attribute: when the message becomes deliverable (epoch milliseconds), for the queue-age metric.
READY_AT = "ready_at"

log = logging.getLogger(__name__)


class Sender(Protocol):
    def send(
        self,
        message: Message,
        *,
        delay_s: float | None = None,
        priority: Priority | None = None,
    ) -> str: ...


@dataclass
class Deps:
    """Long-lived dependencies, built once per process by the composition root."""

    settings: Settings
    topology: Topology
    store: Store
    blobs: BlobStore
    clock: Clock
    publisher: Publisher
    scheduler: Scheduler
    extractor_factory: Callable[[str], Extractor]
    # Per-user Google access (Drive and Gmail); None where no OAuth client is configured.
    google_auth: GoogleAuth | None = None
    # Gmail API access built over google_auth (common.adapters.google.gmail.GmailConnector).
    gmail: Any | None = None
    # The Drive API (common.adapters.google.drive.GoogleDrive); requests carry google_auth's http.
    drive: Drive | None = None
    # Export delivery to Drive folders and Gmail (common.adapters.google.destinations), over google_auth.
    destinations: ExportDestinations | None = None
    # The text model kinds call (grammar audits), built on first use (SLUICE_TEXT_MODEL); None: none configured.
    text_model_factory: Callable[[], TextModel] | None = None
    # What every stage does with a failed attempt: retry after a delay, or give up.
    retry_policy: RetryPolicy = field(default_factory=RetryPolicy)
    # When this process last wrote each operation's progress (see common.service.progress).
    progress_gate: ProgressGate = field(default_factory=ProgressGate)
    # Queue backlog and dead letters (the bus locally; the hold subscriptions on Pub/Sub).
    queues: Queues | None = None
    # Search collections: the index (built on first use) and an embedder per model name (None: lexical only).
    search_index_factory: Callable[[], SearchIndex] | None = None
    embedder_factory: Callable[[str], Embedder | None] | None = None
    # Enrich jobs: the text model by name (None: the deployment's; ConfigError when none is configured)
    # and the tables adapter for a source.
    named_text_model_factory: Callable[[str | None], TextModel] | None = None
    sheets_factory: Callable[[str], Sheets] | None = None
    _extractors: dict[str, Extractor] = field(default_factory=dict)
    _build_lock: threading.Lock = field(default_factory=threading.Lock)
    _text_models: dict[str | None, TextModel] = field(default_factory=dict)
    _search_index: SearchIndex | None = None
    _embedders: dict[str, Embedder | None] = field(default_factory=dict)
    _text_model: TextModel | None = None
    _breakers: Breakers | None = None

    def text_model(self) -> TextModel | None:
        """The configured text model, built once (None: SLUICE_TEXT_MODEL is none)."""
        if self._text_model is None and self.text_model_factory is not None:
            self._text_model = self.text_model_factory()
        return self._text_model

    def extractor(self, name: str) -> Extractor:
        """Extractors are built on first use: the Gemini client costs import time."""
        with self._build_lock:  # one per name, also when a warm-up races the first handler
            if name not in self._extractors:
                self._extractors[name] = self.extractor_factory(name)
            return self._extractors[name]

    def warm(self) -> None:
        """Do the configured extractor's first-use work now (imports, client): a
        worker calls this as it starts, so its first item does not pay for it.
        A failure is left to that item, which reports it with its own error."""
        try:
            extractor = self.extractor(self.settings.extractor.value)
            if isinstance(extractor, Warmable):
                extractor.warm()
        except Exception:  # the first item meets the same failure and records it
            log.warning("warming the extractor failed; the first item will try again", exc_info=True)

    def named_text_model(self, model: str | None = None) -> TextModel:
        """The text model calling ``model`` (built on first use); ConfigError when none is configured."""
        if model not in self._text_models:
            if self.named_text_model_factory is None:
                raise ConfigError("no text model is configured", hint="Set SLUICE_TEXT_MODEL (gemini or openai).")
            self._text_models[model] = self.named_text_model_factory(model)
        return self._text_models[model]

    def sheets(self, source: str) -> Sheets:
        """The tables adapter that reaches ``source`` (a Google Sheet, or a local file on the embedded backend)."""
        if self.sheets_factory is None:
            raise ConfigError("no sheets adapter is configured for this backend")
        return self.sheets_factory(source)

    @property
    def search_index(self) -> SearchIndex:
        if self._search_index is None:
            if self.search_index_factory is None:
                raise ConfigError("no search index is configured for this backend")
            self._search_index = self.search_index_factory()
        return self._search_index

    def embedder(self, model: str) -> Embedder | None:
        if model not in self._embedders:
            if self.embedder_factory is None:
                raise ConfigError("no embedders are configured")
            self._embedders[model] = self.embedder_factory(model)
        return self._embedders[model]

    @property
    def breakers(self) -> Breakers:
        """The circuit breakers of the external dependencies (state in the store)."""
        if self._breakers is None:
            s = self.settings
            config = BreakerConfig(
                failure_threshold=s.circuit_failure_threshold,
                cooldown_s=s.circuit_cooldown_s,
                max_cooldown_s=max(s.circuit_max_cooldown_s, s.circuit_cooldown_s),
            )
            self._breakers = Breakers(self.store, self.clock, config)
        return self._breakers

    def breaker(self, dependency: str) -> StoreCircuitBreaker:
        return self.breakers.get(dependency)

    def bucket_uri(self, bucket: str, name: str) -> str:
        real = self.settings.uploads_bucket if bucket == "uploads" else self.settings.exports_bucket
        return self.blobs.uri(real if self.settings.backend == "gcp" else bucket, name)


@dataclass
class TopologySender:
    """Sends typed messages to the topic the topology assigns to their kind.

    Each message carries the current span (``traceparent``), so its handler's
    span continues the trace, and when it becomes deliverable (``ready_at``).
    """

    topology: Topology
    settings: Settings
    publisher: Publisher
    clock: Clock

    def send(
        self,
        message: Message,
        *,
        delay_s: float | None = None,
        priority: Priority | None = None,
    ) -> str:
        topic = self.settings.topic_name(self.topology.topic_for(message.kind))
        attributes = {"kind": message.kind, **message.log_labels()}
        trace_id = current_context().get("trace_id")
        if trace_id:
            attributes["trace_id"] = trace_id
        # An operation's messages carry its trace (trace id = f(operation id)), whoever sends them.
        tracing.inject(attributes, operation_id=ids.operation_of(attributes))
        if priority is not None:
            attributes["priority"] = priority.value
            attributes["priority_rank"] = str(priority.rank)
        deliver_after: datetime | None = None
        if delay_s:
            deliver_after = self.clock.now() + timedelta(seconds=delay_s)
        if self.clock is not None:  # some callers send without a clock (they never delay)
            ready = deliver_after or self.clock.now()
            attributes[READY_AT] = str(int(ready.timestamp() * 1000))
        return self.publisher.publish(topic, message.encode(), attributes, deliver_after=deliver_after)


@dataclass
class Context:
    """One handler invocation: dependencies, a sender, and which delivery this is."""

    deps: Deps
    sender: Sender
    message_id: str
    attempt: int = 1

    @property
    def store(self) -> Store:
        return self.deps.store

    @property
    def blobs(self) -> BlobStore:
        return self.deps.blobs

    @property
    def clock(self) -> Clock:
        return self.deps.clock

    @property
    def settings(self) -> Settings:
        return self.deps.settings

    @property
    def retry_policy(self) -> RetryPolicy:
        return self.deps.retry_policy

    def now(self) -> datetime:
        return self.deps.clock.now()

    def send(
        self,
        message: Message,
        *,
        delay_s: float | None = None,
        priority: Priority | None = None,
    ) -> str:
        return self.sender.send(message, delay_s=delay_s, priority=priority)
