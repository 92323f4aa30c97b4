"""The job API's settings, read from ``SLUICE_API_*`` variables.

Kept beside the API (rather than on :class:`common.config.Settings`) so the
API can be configured before those fields land there; nothing reads them at
import time.

Authentication is configured explicitly, never defaulted: one or more OIDC
issuers (``SLUICE_API_ISSUERS`` as JSON, or the presets below), or -- on the
embedded backend only -- a local development identity
(``SLUICE_API_DEV_IDENTITY``), which the app announces with a WARNING.

A user is (issuer, subject); records are owned by a hash of both
(:func:`common.api.auth.owner_id`). Records stored before that, owned by a
bare subject, belong to that subject of ``SLUICE_API_LEGACY_ISSUER`` (by
default the first configured issuer) and to no one else.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class IssuerConfig(BaseModel):
    """One trusted token issuer: its ``iss``, the ``aud`` our tokens carry, and its keys."""

    model_config = ConfigDict(frozen=True)

    issuer: str
    audience: str
    jwks_url: str
    algorithms: tuple[str, ...] = ("RS256",)
    # Google signs ID tokens as either of its two issuer spellings.
    aliases: tuple[str, ...] = ()


def firebase_issuer(project_id: str) -> IssuerConfig:
    """Firebase Auth ID tokens of ``project_id``."""
    return IssuerConfig(
        issuer=f"https://securetoken.google.com/{project_id}",
        audience=project_id,
        jwks_url="https://www.googleapis.com/service_accounts/v1/jwk/securetoken@system.gserviceaccount.com",
    )


def entra_issuer(tenant_id: str, client_id: str) -> IssuerConfig:
    """Microsoft Entra ID (v2.0 endpoint) tokens issued for the app ``client_id``."""
    return IssuerConfig(
        issuer=f"https://login.microsoftonline.com/{tenant_id}/v2.0",
        audience=client_id,
        jwks_url=f"https://login.microsoftonline.com/{tenant_id}/discovery/v2.0/keys",
    )


def google_issuer(client_id: str) -> IssuerConfig:
    """Google account ID tokens issued to the OAuth client ``client_id``."""
    return IssuerConfig(
        issuer="https://accounts.google.com",
        aliases=("accounts.google.com",),
        audience=client_id,
        jwks_url="https://www.googleapis.com/oauth2/v3/certs",
    )


class ApiSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SLUICE_API_", frozen=True, extra="ignore")

    # Trusted issuers, e.g. '[{"issuer": "...", "audience": "...", "jwks_url": "..."}]'.
    issuers: list[IssuerConfig] = Field(default_factory=list)
    firebase_project: str | None = None
    entra_tenant: str | None = None
    entra_client_id: str | None = None
    google_client_id: str | None = None
    # Whose users own records stored before owner ids were qualified by issuer
    # (a bare subject): that subject of this issuer. Default: the first issuer.
    legacy_issuer: str | None = None
    jwks_ttl_s: float = Field(default=3600.0, gt=0)
    clock_skew_s: int = Field(default=30, ge=0, le=300)
    # Embedded backend only: every request without a token is this user.
    dev_identity: str | None = None
    # Operators read everyone's stats and dead letters and set budgets: users whose
    # owner id is listed here (GET /v1/stats shows yours; the dev identity's is its
    # name), or whose token's ``roles`` claim holds operator_role.
    operators: list[str] = Field(default_factory=list)
    operator_role: str = "sluice.operator"

    # Limits.
    max_upload_bytes: int = Field(default=32 * 1024 * 1024, ge=1)
    rate_limit_rpm: int = Field(default=600, ge=0)  # per user; 0: no limit
    max_page_size: int = Field(default=100, ge=1, le=1000)
    max_schedule_days: int = Field(default=30, ge=1)  # Cloud Tasks schedules at most 30 days ahead
    idempotency_ttl_s: int = Field(default=24 * 3600, ge=60)
    # Server-Sent Events: how often the stream polls, and how long one stream lasts.
    sse_poll_s: float = Field(default=0.5, gt=0)
    sse_max_s: float = Field(default=55.0, gt=0)

    def all_issuers(self) -> list[IssuerConfig]:
        found = list(self.issuers)
        if self.firebase_project:
            found.append(firebase_issuer(self.firebase_project))
        if self.entra_tenant and self.entra_client_id:
            found.append(entra_issuer(self.entra_tenant, self.entra_client_id))
        if self.google_client_id:
            found.append(google_issuer(self.google_client_id))
        return found
