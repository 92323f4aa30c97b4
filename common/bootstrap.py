"""The composition root: the one place that picks adapters and wires them.

``bootstrap(settings)`` builds the dependencies for a backend; tests call it
too, with overrides. Cloud entrypoints call :func:`deps` which builds them on
the first invocation and reuses them afterwards (never at import time).
:func:`local_app` wires the embedded backend whole -- dependencies, bus,
runtime and sender -- for the CLI, ``sluice serve`` and tests.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from common.config import Settings
from common.core.errors import ConfigError
from common.core.messages import BlobFinalized
from common.obs import logging as slog
from common.ports.blobs import BlobInfo
from common.ports.clock import Clock
from common.ports.embedder import Embedder
from common.ports.extractor import Extractor
from common.ports.search_index import SearchIndex
from common.ports.sheets import Sheets
from common.ports.textmodel import TextModel
from common.service.context import Deps, TopologySender
from common.topology import Topology
from common.topology import load as load_topology

if TYPE_CHECKING:
    from common.adapters.local.sqlite_bus import SqliteBus
    from common.runtime.local import LocalRuntime

# Indexes the handlers' queries need (Firestore composite indexes in the cloud).
STORE_INDEXES: dict[str, list[str]] = {
    "jobs": ["owner", "key", "owner,created_at", "owner,updated_at", "owner,name"],
    "files": ["job_id,status,file_type"],
    "integrations": ["owner", "account", "refresh_failures"],
    "runs": ["job_id,run_number", "owner,created_at", "owner,status", "status", "status,created_at"],
    "tasks": [
        "run_id,status",
        "run_id,file_name",
        "status,lease_until",
        "owner,status,lease_until",
        "job_id",
        "status,created_at",
        "owner,kind,status,finished_at",
    ],
    "exports": ["run_id", "job_id", "destination.kind,created_at", "status,created_at", "owner,status,finished_at"],
    "operations": ["owner", "owner,created_at", "job_id", "expire_at"],
    "automations": ["owner,created_at", "owner,account"],
    "automation_runs": ["status"],
    "gmail_import_items": ["operation_id"],
    "processed_messages": ["expire_at"],
    "collections": ["owner", "owner,name"],
    "collection_docs": ["collection_id", "collection_id,created_at"],
}


def bootstrap(
    settings: Settings,
    *,
    clock: Clock | None = None,
    topology: Topology | None = None,
    extractor_factory: Callable[[str], Extractor] | None = None,
) -> Deps:
    topo = topology or load_topology(settings.topology)
    if settings.backend == "local":
        return _local(settings, topo, clock, extractor_factory)
    if settings.backend == "gcp":
        return _gcp(settings, topo, clock, extractor_factory)
    raise ConfigError(f"unknown backend {settings.backend!r}")


def _gcp(
    settings: Settings,
    topo: Topology,
    clock: Clock | None,
    extractor_factory: Callable[[str], Extractor] | None,
    *,
    signing_credentials: Any = None,
) -> Deps:
    """Firestore, Pub/Sub, Cloud Storage and Cloud Tasks. Clients are built on first use."""
    from common.adapters.gcp.firestore_store import FirestoreStore
    from common.adapters.gcp.gcs_blobs import GcsBlobStore
    from common.adapters.gcp.pubsub_bus import PubSubPublisher
    from common.adapters.gcp.pubsub_queues import PubSubQueues
    from common.adapters.gcp.tasks_scheduler import CloudTasksScheduler
    from common.adapters.local.clock import SystemClock

    if not settings.project:
        raise ConfigError("the gcp backend needs SLUICE_PROJECT", hint="Set SLUICE_PROJECT to the project's id.")
    project = settings.project
    scheduler = CloudTasksScheduler(
        project,
        settings.region,
        topo,
        settings,
        service_account_email=settings.tasks_service_account,
        queue_prefix=settings.prefix,
    )
    blobs = GcsBlobStore(
        project, service_account_email=settings.signing_service_account, signing_credentials=signing_credentials
    )
    store = FirestoreStore(project)
    publisher = PubSubPublisher(project, delayed=scheduler)
    google_auth = None
    if settings.google_client_id and settings.google_client_secret and settings.token_key:
        import base64

        from common.adapters.google import GoogleOAuth

        google_auth = GoogleOAuth(
            store,
            clock or SystemClock(),
            key=base64.b64decode(settings.token_key.get_secret_value()),
            client_id=settings.google_client_id,
            client_secret=settings.google_client_secret.get_secret_value(),
            token_uri=settings.google_token_uri,
            breakers=lambda name: built.breaker(name),
        )
    built = Deps(
        settings=settings,
        topology=topo,
        store=store,
        blobs=blobs,
        clock=clock or SystemClock(),
        # Delayed sends (retry backoff) go through Cloud Tasks: Pub/Sub cannot delay.
        publisher=publisher,
        scheduler=scheduler,
        extractor_factory=extractor_factory or (lambda name: _extractor(name, settings, built)),
        text_model_factory=None if settings.text_model == "none" else (lambda: text_model(settings, built)),
        google_auth=google_auth,
        search_index_factory=lambda: _firestore_index(settings),
        embedder_factory=lambda model: embedder_for(model, settings, built),
        named_text_model_factory=lambda model: text_model(settings, built, model=model),
        sheets_factory=lambda source: sheets_for(source, settings, built),
        drive=_drive(),
        destinations=_destinations(),
        queues=PubSubQueues(project, publisher, sources=_dead_letter_sources(settings, topo)),
    )
    if google_auth is not None:
        with_google_auth(built, google_auth)
    return built


def _dead_letter_sources(settings: Settings, topo: Topology) -> dict[str, tuple[str, str | None]]:
    """Each work subscription's deployed name -> (its topic, its dead-letter topic)."""
    from common.topology import subscription_name

    found: dict[str, tuple[str, str | None]] = {}
    for topic, spec in topo.subscribed_topics().items():
        dlq = None if spec.dead_letter_topic is None else settings.topic_name(spec.dead_letter_topic)
        found[subscription_name(settings.topic_name(topic), spec.function)] = (settings.topic_name(topic), dlq)
    return found


def _local(
    settings: Settings,
    topo: Topology,
    clock: Clock | None,
    extractor_factory: Callable[[str], Extractor] | None,
) -> Deps:
    from common.adapters.local.bus_queues import BusQueues
    from common.adapters.local.clock import SystemClock
    from common.adapters.local.fs_blobs import FsBlobStore
    from common.adapters.local.scheduler import BusScheduler
    from common.adapters.local.sqlite_bus import SqliteBus
    from common.adapters.local.sqlite_store import SqliteStore

    clk = clock or SystemClock()
    data = settings.data_dir
    store = SqliteStore(
        data / "state.db", durable=settings.durable, indexes=STORE_INDEXES, watch_interval_s=settings.store_watch_s
    )
    bus = SqliteBus(data / "bus.db", clock=clk, durable=settings.durable)
    from common.runtime.local import declare_topology

    declare_topology(bus, topo, settings)
    blobs = FsBlobStore(data / "blobs", clock=clk, url_base=settings.local_api_url, durable=settings.durable)
    google_auth = None
    if settings.google_client_id and settings.google_client_secret:
        from common.adapters.google import GoogleOAuth, load_or_create_key

        google_auth = GoogleOAuth(
            store,
            clk,
            key=load_or_create_key(data / "token.key"),
            client_id=settings.google_client_id,
            client_secret=settings.google_client_secret.get_secret_value(),
            token_uri=settings.google_token_uri,
            breakers=lambda name: built.breaker(name),
        )
    built = Deps(
        settings=settings,
        topology=topo,
        store=store,
        blobs=blobs,
        clock=clk,
        publisher=bus,
        scheduler=BusScheduler(bus, topo, settings),
        queues=BusQueues(bus),
        google_auth=google_auth,
        extractor_factory=extractor_factory or (lambda name: _extractor(name, settings, built)),
        search_index_factory=lambda: _sqlite_index(settings),
        embedder_factory=lambda model: embedder_for(model, settings, built),
        text_model_factory=None if settings.text_model == "none" else (lambda: text_model(settings, built)),
        named_text_model_factory=lambda model: text_model(settings, built, model=model),
        sheets_factory=lambda source: sheets_for(source, settings, built),
        drive=_drive(),
        destinations=_destinations(),
    )
    if google_auth is not None:
        with_google_auth(built, google_auth)
    sender = TopologySender(topo, settings, bus, clk)
    for bucket, spec in topo.buckets.items():
        if spec.finalize is not None:
            blobs.on_finalize(bucket, _finalize_hook(sender))
    return built


def _drive() -> Any:
    """The Drive API: user-neutral (each request carries its user's http), built on first use."""
    from common.adapters.google.drive import GoogleDrive

    return GoogleDrive()


def _destinations() -> Any:
    """Export delivery to Drive and Gmail; it needs google_auth only when an export uses it."""
    from common.adapters.google.destinations import GoogleDestinations

    return GoogleDestinations()


def with_google_auth(deps: Deps, auth: Any) -> Deps:
    """Give ``deps`` per-user Google access over ``auth`` (a GoogleAuth) and the API clients built on it.

    The composition root calls it where an OAuth client is configured; tests
    call it with a GoogleAuth pointed at fake servers. Returns ``deps``.
    """
    from common.adapters.google.gmail import GmailConnector

    deps.google_auth = auth
    deps.gmail = GmailConnector(auth)
    # Google Sheets reach this auth too (a copy of deps must not keep a factory bound to the original).
    deps.sheets_factory = lambda source: sheets_for(source, deps.settings, deps)
    return deps


def _finalize_hook(sender: TopologySender) -> Callable[[BlobInfo], None]:
    def hook(info: BlobInfo) -> None:
        sender.send(
            BlobFinalized(
                bucket=info.bucket,
                name=info.name,
                size=info.size,
                content_type=info.content_type,
                generation=info.generation,
                metadata=info.metadata,
            )
        )

    return hook


def _extractor(name: str, settings: Settings, deps: Deps) -> Extractor:
    if name == "offline":
        from common.adapters.offline_model import OfflineExtractor

        return OfflineExtractor(
            deps.blobs, max_bytes=settings.max_document_bytes, max_pages=settings.max_document_pages
        )
    if name == "gemini":
        from common.adapters.gcp.gemini import GeminiExtractor
        from common.core.leases import QuotaPlan
        from common.service.leased_ratelimit import LeasedRateLimiter

        if not settings.project:
            raise ConfigError(
                "the gemini extractor needs SLUICE_PROJECT",
                hint="Set SLUICE_PROJECT to the project that runs Vertex AI.",
            )
        # Leases from sharded buckets: no document is written on every call.
        limiter = LeasedRateLimiter(
            deps.store,
            deps.clock,
            key=f"gemini:{settings.project}:{settings.gemini_model}",
            plan=QuotaPlan.per_minute(settings.model_rpm, spread=True),
            holder=settings.instance_id or None,
            hint="Sluice is pacing calls to stay within the model quota (SLUICE_MODEL_RPM); "
            "the task is retried on its own.",
        )
        return GeminiExtractor(
            project=settings.project,
            location=settings.gemini_location,
            model=settings.gemini_model,
            blobs=deps.blobs,
            clock=deps.clock,
            limiter=limiter,
            breaker=deps.breaker("vertex"),
            max_pages=settings.max_document_pages,
            max_bytes=settings.max_document_bytes,
            http_base_url=settings.gemini_base_url,
            ask_gateway_first=settings.gemini_via_gateway,
        )
    raise ConfigError(f"extractor {name!r} is not available", hint="Use SLUICE_EXTRACTOR=offline or gemini.")


def text_model(settings: Settings, deps: Deps, *, model: str | None = None) -> TextModel:
    """The configured text model (SLUICE_TEXT_MODEL), ``model`` overriding its default model name.

    ConfigError when none is configured: callers check this before a job
    starts, so the user hears it at once rather than from a failed run.
    """
    from common.core.leases import QuotaPlan
    from common.service.leased_ratelimit import LeasedRateLimiter

    pacing = "Sluice is pacing calls to stay within the model quota; the work resumes on its own."
    if settings.text_model == "gemini":
        from common.adapters.gcp.gemini_text import GeminiTextModel

        if not settings.project:
            raise ConfigError("the gemini text model needs SLUICE_PROJECT", hint="Set SLUICE_PROJECT.")
        name = model or settings.gemini_model
        # The extractor's key: extraction and enrichment share one quota per model.
        limiter = LeasedRateLimiter(
            deps.store,
            deps.clock,
            key=f"gemini:{settings.project}:{name}",
            plan=QuotaPlan.per_minute(settings.model_rpm, spread=True),
            holder=settings.instance_id or None,
            hint=pacing,
        )
        return GeminiTextModel(
            project=settings.project,
            location=settings.gemini_location,
            model=name,
            clock=deps.clock,
            limiter=limiter,
            breaker=deps.breaker("vertex"),
            http_base_url=settings.gemini_base_url,
        )
    if settings.text_model == "openai":
        from common.adapters.openai_chat import OpenAIChatModel

        chosen = model or settings.openai_model
        if not settings.openai_base_url or not chosen:
            raise ConfigError(
                "the openai text model needs SLUICE_OPENAI_BASE_URL and a model",
                hint="Set SLUICE_OPENAI_BASE_URL (e.g. http://127.0.0.1:11434/v1) and SLUICE_OPENAI_MODEL or --model.",
            )
        limiter = LeasedRateLimiter(
            deps.store,
            deps.clock,
            key=f"openai:{settings.openai_base_url}:{chosen}",
            plan=QuotaPlan.per_minute(settings.openai_rpm),
            holder=settings.instance_id or None,
            hint=pacing,
        )
        key = settings.openai_api_key.get_secret_value() if settings.openai_api_key else None
        return OpenAIChatModel(
            base_url=settings.openai_base_url,
            model=chosen,
            clock=deps.clock,
            api_key=key,
            limiter=limiter,
            breaker=deps.breaker("openai"),
        )
    raise ConfigError(
        "no text model is configured",
        hint="Set SLUICE_TEXT_MODEL=gemini (with SLUICE_PROJECT) or SLUICE_TEXT_MODEL=openai "
        "with SLUICE_OPENAI_BASE_URL and SLUICE_OPENAI_MODEL.",
    )


def sheets_for(source: str, settings: Settings, deps: Deps) -> Sheets:
    """Local CSV/XLSX files on the embedded backend; otherwise Google Sheets with the owner's OAuth grant."""
    from common.core.enrich import is_local_table

    if is_local_table(source):
        if settings.backend != "local":
            raise ConfigError(
                f"{source} is a local file; the {settings.backend} backend reads Google Sheets only",
                hint="Give a Google Sheet's URL or id, or use the embedded backend (SLUICE_BACKEND=local).",
            )
        from common.adapters.local.table_files import LocalTables

        return LocalTables()
    if deps.google_auth is None:
        raise ConfigError(
            "Google Sheets need an OAuth client",
            hint="Set SLUICE_GOOGLE_CLIENT_ID and SLUICE_GOOGLE_CLIENT_SECRET, then connect Google "
            "(POST /v1/integrations/google, or the console).",
        )
    from common.adapters.google.sheets import GoogleSheets

    return GoogleSheets(deps.google_auth, deps.clock, limiter=lambda key: _sheets_limiter(key, settings, deps))


def _sheets_limiter(key: str, settings: Settings, deps: Deps) -> Any:
    """The shared limiter for Sheets requests of one kind ("read", "write") for the project or one user
    ("read:OWNER"): the API's per-minute quotas, shared by every instance through the store."""
    from common.core.leases import QuotaPlan
    from common.service import leased_ratelimit

    op, _, owner = key.partition(":")
    project, user = (
        (settings.sheets_reads_per_min, settings.sheets_reads_per_min_per_user)
        if op == "read"
        else (settings.sheets_writes_per_min, settings.sheets_writes_per_min_per_user)
    )
    return leased_ratelimit.shared(
        deps.store,
        deps.clock,
        key=f"sheets:{key}",
        plan=QuotaPlan.per_minute(user if owner else project),
        hint="Sluice is pacing Google Sheets requests to stay within the API's quotas; the work resumes on its own.",
    )


def _sqlite_index(settings: Settings) -> SearchIndex:
    from common.adapters.local.sqlite_index import SqliteSearchIndex

    return SqliteSearchIndex(settings.data_dir / "search.db", vector_search=settings.vector_search)


def _firestore_index(settings: Settings) -> SearchIndex:
    # In the store's database: chunks in ``search_chunks``, with the vector index terraform/firestore.tf declares.
    from common.adapters.gcp.firestore_index import FirestoreSearchIndex

    return FirestoreSearchIndex(settings.project)


def embedder_for(model: str, settings: Settings, deps: Deps) -> Embedder | None:
    """The embedder a collection's model name stands for; None for "none" (lexical only)."""
    kind, _, name = model.partition(":")
    if model == "none":
        return None
    if model.startswith("hashing-") and model.removeprefix("hashing-").isdigit():
        from common.adapters.embedders.hashing import HashingEmbedder

        return HashingEmbedder(dimensions=int(model.removeprefix("hashing-")))
    if kind == "vertex" and name:
        from common.adapters.embedders.vertex import VertexEmbedder
        from common.core.leases import QuotaPlan
        from common.service.leased_ratelimit import LeasedRateLimiter

        if not settings.project:
            raise ConfigError("Vertex AI embeddings need SLUICE_PROJECT", hint="Set SLUICE_PROJECT.")
        limiter = LeasedRateLimiter(
            deps.store,
            deps.clock,
            key=f"embed:{settings.project}:{name}",
            plan=QuotaPlan.per_minute(settings.embed_rpm, spread=True),
            holder=settings.instance_id or None,
            hint="Sluice is pacing embedding calls to stay within the quota (SLUICE_EMBED_RPM).",
        )
        return VertexEmbedder(
            project=settings.project,
            location=settings.embed_location,
            model=name,
            clock=deps.clock,
            batch_size=settings.embed_batch_size,
            limiter=limiter,
            breaker=deps.breaker("vertex"),
        )
    if kind == "openai" and name:
        from common.adapters.embedders.openai_compat import OpenAICompatibleEmbedder

        if not settings.embed_url:
            raise ConfigError("openai embeddings need SLUICE_EMBED_URL", hint="Set SLUICE_EMBED_URL to the API's /v1.")
        key = settings.embed_api_key.get_secret_value() if settings.embed_api_key else None
        return OpenAICompatibleEmbedder(
            base_url=settings.embed_url,
            model=name,
            clock=deps.clock,
            api_key=key,
            batch_size=min(settings.embed_batch_size, 64),
            breaker=deps.breaker("embeddings"),
        )
    raise ConfigError(
        f"unknown embedding model {model!r}",
        hint='Use "none", "hashing-256" (offline, not semantic), "vertex:text-embedding-005" or "openai:MODEL".',
    )


def local_bus(deps: Deps) -> SqliteBus:
    """The embedded backend's bus (consumer side); ConfigError on other backends."""
    from common.adapters.local.sqlite_bus import SqliteBus

    if not isinstance(deps.publisher, SqliteBus):
        raise ConfigError("this command needs the local backend (SLUICE_BACKEND=local)")
    return deps.publisher


@dataclass
class LocalApp:
    """The embedded backend, wired: dependencies, the bus, the runtime consuming it, and a sender on it."""

    deps: Deps
    bus: SqliteBus
    runtime: LocalRuntime
    sender: TopologySender


def local_app(
    settings: Settings | None = None,
    *,
    deps: Deps | None = None,
    clock: Clock | None = None,
    extractor_factory: Callable[[str], Extractor] | None = None,
    runtime_cls: type[LocalRuntime] | None = None,
    declare: bool = True,
    **runtime_options: Any,
) -> LocalApp:
    """Wire the embedded backend: bootstrap ``settings`` (or take ``deps`` already built), then the
    bus, a runtime over it (``runtime_cls``, with ``runtime_options``) with the topology declared,
    and a sender that publishes on the bus. Nothing runs until ``runtime.start()`` or ``drain()``.
    """
    from common.runtime.local import LocalRuntime

    if (settings is None) == (deps is None):
        raise TypeError("local_app takes settings or deps, not both")
    if deps is None:
        assert settings is not None
        deps = bootstrap(settings, clock=clock, extractor_factory=extractor_factory)
    bus = local_bus(deps)
    runtime = (runtime_cls or LocalRuntime)(deps, bus, **runtime_options)
    if declare:
        runtime.declare()
    return LocalApp(deps, bus, runtime, TopologySender(deps.topology, deps.settings, bus, deps.clock))


def configure_observability(settings: Settings) -> None:
    """Logs (Cloud Logging's fields in the cloud), traces and metrics, as configured."""
    from common.obs import metrics, tracing

    cloud_project = settings.project if settings.backend == "gcp" else None
    slog.configure(settings.log_level, settings.log_format, project=cloud_project)
    tracing.configure(settings.trace_exporter, project=settings.project, sample_ratio=settings.trace_sample_ratio)
    metrics.configure(settings.metrics_exporter, project=settings.project)
    metrics.set_model_limit(settings.gemini_model, settings.model_rpm / 60)


_cached: Deps | None = None
_cache_lock = threading.Lock()


def deps() -> Deps:
    """Process-wide dependencies for cloud entrypoints, built on first use."""
    global _cached
    if _cached is None:
        with _cache_lock:
            if _cached is None:
                settings = Settings()  # the backend comes from SLUICE_BACKEND; no default
                configure_observability(settings)
                _cached = bootstrap(settings)
    return _cached
