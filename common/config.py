"""Sluice's configuration: one typed object read from ``SLUICE_*`` variables.

Nothing reads it at import time; the composition root builds it once, on the
first invocation. There is deliberately no default backend: a deployment says
``SLUICE_BACKEND=local`` or ``SLUICE_BACKEND=gcp`` and nothing falls back.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from common.core.cost import DEFAULT_PRICES, ModelPrice
from common.core.models import ExtractorName


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SLUICE_", frozen=True, extra="ignore")

    backend: Literal["local", "gcp"]
    # Embedded backend: where the SQLite files and blobs live.
    data_dir: Path = Path(".sluice")
    # fsync every commit (synchronous=FULL); off only for throwaway data.
    durable: bool = True
    topology: Path | None = None

    # Google Cloud.
    project: str | None = None
    region: str = "europe-west1"
    # Cloud resource names are prefixed so several deployments share a project.
    prefix: str = "sluice-"
    uploads_bucket: str = "uploads"
    # Cloud Tasks calls Pub/Sub's publish API as this service account (OAuth token).
    tasks_service_account: str | None = None
    # Signs V4 URLs through IAM signBlob when the runtime credentials hold no key.
    signing_service_account: str | None = None
    exports_bucket: str = "exports"

    # Extraction.
    extractor: ExtractorName = ExtractorName.OFFLINE
    gemini_model: str = "gemini-2.5-flash"
    gemini_location: str = "europe-west1"
    # Where Vertex AI is reached (None: Google's endpoint for gemini_location). A supervisor's
    # worker processes are given its model gateway's address here (see model_gateway).
    gemini_base_url: str | None = None
    # Set by a supervisor for its worker processes: gemini_base_url is its model gateway,
    # asked first for an answer it kept from a killed worker's call.
    gemini_via_gateway: bool = False
    model_rpm: int = Field(default=60, ge=1)
    max_document_bytes: int = Field(default=50 * 1024 * 1024, ge=1)
    max_document_pages: int = Field(default=1000, ge=1)

    # The text model of enrich jobs (common.ports.textmodel): none, Gemini on Vertex AI
    # (SLUICE_PROJECT, SLUICE_GEMINI_MODEL, the model quota shared with extraction), or any
    # OpenAI-compatible chat endpoint (a local server included).
    text_model: Literal["none", "gemini", "openai"] = "none"
    openai_base_url: str | None = None
    openai_api_key: SecretStr | None = None
    openai_model: str | None = None
    openai_rpm: int = Field(default=600, ge=1)
    # Enrich runs (sheets) running at once per user; more wait queued.
    enrich_sheets_per_user: int = Field(default=3, ge=1)
    # Google Sheets API requests per minute (its default quotas), paced through the shared rate limiter:
    # reads and writes, per project and per user.
    sheets_reads_per_min: int = Field(default=300, ge=1)
    sheets_writes_per_min: int = Field(default=300, ge=1)
    sheets_reads_per_min_per_user: int = Field(default=60, ge=1)
    sheets_writes_per_min_per_user: int = Field(default=60, ge=1)
    # Search collections. Embedding models a collection may name: "none" (lexical only),
    # "hashing-N" (offline, not semantic), "vertex:MODEL", "openai:MODEL" (SLUICE_EMBED_URL).
    embed_location: str = "europe-west1"
    embed_rpm: int = Field(default=600, ge=1)
    embed_batch_size: int = Field(default=100, ge=1, le=250)
    embed_url: str | None = None
    embed_api_key: SecretStr | None = None
    # The embedded backend's vector search: "brute-force" (numpy) or "sqlite-vec" (needs a sqlite3
    # that loads extensions). Chosen here, never by a silent fallback.
    vector_search: Literal["brute-force", "sqlite-vec"] = "brute-force"
    # Firestore's vector index is declared for this many dimensions (terraform/search.tf).
    vector_dimensions: int = Field(default=768, ge=1, le=2048)

    # Google OAuth (Drive and Gmail on the user's behalf). Unset: no Google access.
    google_client_id: str | None = None
    google_client_secret: SecretStr | None = None
    google_token_uri: str = "https://oauth2.googleapis.com/token"
    google_auth_uri: str = "https://accounts.google.com/o/oauth2/v2/auth"
    # Where Google sends the browser back (the API's /v1/integrations/google/callback).
    google_redirect_uri: str | None = None
    drive_chunk_bytes: int = Field(default=8 * 1024 * 1024, ge=256 * 1024)

    # Cost. Prices per model (USD per million input/output tokens, per page, and the
    # estimate's tokens-per-page assumptions), as JSON, merged over the defaults
    # (common/core/cost.py: Gemini list prices, 0 for the offline extractor), e.g.
    # SLUICE_PRICES='{"gemini-2.5-flash": {"input_per_million": 0.3, "output_per_million": 2.5}}'.
    prices: dict[str, ModelPrice] = Field(default_factory=dict)
    # Each user's monthly budget in USD (0: no budget); a user's own Budget record overrides it.
    monthly_budget: float = Field(default=100.0, ge=0)

    # Per-user fairness: at most this many extraction tasks running at once per user (0: no cap).
    max_running_tasks_per_user: int = Field(default=0, ge=0)

    # Document audits: at most this many pages matched against a reference logo at once per
    # process (OpenCV template matching is CPU-bound; the worker pool is larger than the cores).
    logo_concurrency: int = Field(default=2, ge=1)

    # Circuit breakers (Vertex AI, Drive, Gmail, Google's token endpoint): this many
    # consecutive failures open one for the cool-down (doubling while it keeps failing).
    circuit_failure_threshold: int = Field(default=5, ge=1)
    circuit_cooldown_s: float = Field(default=30.0, gt=0)
    circuit_max_cooldown_s: float = Field(default=600.0, gt=0)

    # Embedded runtime: handler threads per function (0: automatic, i.e. 8, or for the
    # model-calling function with a remote model its topology concurrency, since its
    # handlers wait on the model). Always capped by the topology's instances x concurrency.
    workers: int = Field(default=0, ge=0)
    # Embedded runtime: worker processes ``sluice serve`` runs (1: the stages run in the
    # serving process). With N > 1 a supervisor runs N child processes that share each
    # function's handler threads; killing one loses only its share of the in-flight work.
    processes: int = Field(default=1, ge=1, le=64)
    # This process's name among the worker processes a supervisor runs (set by it, not by hand):
    # the model quota's shards note what it reserves, given back at once if it dies.
    instance_id: str = ""
    # With processes > 1: the workers call Vertex AI through the supervisor's model gateway,
    # which outlives them, so a worker killed mid-call loses no model answer (common.runtime.model_gateway).
    model_gateway: bool = True
    # Embedded store: while an SSE stream waits for a change, how often the serving process
    # looks for commits of the worker processes (SQLite's data_version). Lower: less lag.
    store_watch_s: float = Field(default=0.02, gt=0, le=5)

    # Orchestration.
    task_lease_s: float = Field(default=600.0, gt=0)
    # A run still running this long after it started is reported stalled (once) by the cleanup sweep.
    run_timeout_s: float = Field(default=6 * 3600.0, gt=0)
    # Per job kind, seconds after which a run fails with ``run_timeout`` (overrides the kind's own;
    # 0: none). JSON, e.g. SLUICE_RUN_TIMEOUTS='{"extract": 21600}'.
    run_timeouts: dict[str, float] = Field(default_factory=dict)
    # Modules that declare extra job kinds (comma-separated; read by common.kinds.load).
    kinds: str = ""
    progress_min_interval_s: float = Field(default=1.0, ge=0)
    signed_url_ttl_s: int = Field(default=7 * 24 * 3600, ge=1, le=7 * 24 * 3600)
    local_api_url: str = "http://127.0.0.1:8080"

    # Traces and metrics (OpenTelemetry). "cloud": Cloud Trace / Cloud Monitoring of SLUICE_PROJECT.
    trace_exporter: Literal["none", "console", "otlp", "cloud"] = "none"
    trace_sample_ratio: float = Field(default=1.0, ge=0, le=1)
    metrics_exporter: Literal["none", "prometheus", "console", "cloud"] = "none"
    # The token-encryption key in the cloud (base64, from Secret Manager); locally a key file.
    token_key: SecretStr | None = None

    # Logs.
    log_level: str = "INFO"
    log_format: Literal["json", "text"] = "json"

    def topic_name(self, topic: str) -> str:
        """The deployed name of a topology topic (prefixed in the cloud)."""
        return topic if self.backend == "local" else f"{self.prefix}{topic}"

    def price_table(self) -> dict[str, ModelPrice]:
        """The prices in force: the defaults, with SLUICE_PRICES' entries over them."""
        return {**DEFAULT_PRICES, **self.prices}
