"""Users' Google integrations: connect, status, disconnect -- and where handlers get Google access.

An ``Integration`` is one user's connected Google account: the scopes granted,
the refresh token sealed at rest (never returned, never logged), and a status
(``connected``, ``reconnect_required`` after a revoked grant, ``disconnected``).
Its id derives from the owner and the account, so connecting the same account
again (to grant more scopes, or after a revocation) updates the one record.

Handlers reach Google through the ``GoogleAuth`` port, which the composition
root puts on ``Deps.google_auth`` (see :func:`google_auth`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import datetime
from typing import Protocol, cast

from pydantic import BaseModel, ConfigDict

from common.core.errors import ConfigError, NotFound, PermanentError, ReconnectRequired
from common.core.models import Integration, IntegrationStatus
from common.ports.google import GoogleAuth
from common.ports.store import Filter, Transaction
from common.service import repo
from common.service.context import Deps


class GoogleAccounts(GoogleAuth, Protocol):
    """The GoogleAuth port plus sealing a new refresh token (what connecting needs)."""

    def seal_refresh_token(self, refresh_token: str, *, owner: str, account: str) -> str: ...


def google_auth(deps: Deps) -> GoogleAccounts:
    """The deployment's Google access (``deps.google_auth``), or ConfigError if it has none.

    Connecting also needs to seal tokens, which the GoogleOAuth adapter does;
    a GoogleAuth without that is refused here rather than failing later.
    """
    auth = deps.google_auth
    if auth is None:
        raise ConfigError(
            "Google access is not configured in this deployment",
            hint="Configure the Google OAuth client (id and secret) so the composition root builds GoogleOAuth.",
        )
    if not callable(getattr(auth, "seal_refresh_token", None)):
        raise ConfigError(f"{type(auth).__name__} cannot store refresh tokens (no seal_refresh_token)")
    return cast(GoogleAccounts, auth)


class IntegrationInfo(BaseModel):
    """What the API and CLI show about an integration: never the token."""

    model_config = ConfigDict(frozen=True)

    id: str
    account: str
    scopes: list[str]
    status: IntegrationStatus
    status_reason: str | None
    refresh_failures: int
    connected_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, record: Integration) -> IntegrationInfo:
        return cls(
            id=record.id,
            account=record.account,
            scopes=list(record.scopes),
            status=record.status,
            status_reason=record.status_reason,
            refresh_failures=record.refresh_failures,
            connected_at=record.created_at,
            updated_at=record.updated_at,
        )


def integration_id(owner: str, account: str) -> str:
    digest = hashlib.sha256(f"google\x00{owner}\x00{normalize_account(account)}".encode()).hexdigest()
    return f"gi_{digest[:24]}"


def normalize_account(account: str) -> str:
    return account.strip().lower()


def connect(
    deps: Deps,
    *,
    owner: str,
    account: str,
    refresh_token: str,
    scopes: Sequence[str],
) -> IntegrationInfo:
    """Store (or replace) ``owner``'s refresh token for ``account``, sealed, with the scopes granted.

    Reconnecting resets the status and the failure count; Gmail watch state
    (history id, watch expiry) is kept.
    """
    account = normalize_account(account)
    if "@" not in account:
        raise PermanentError(f"{account!r} is not a Google account address")
    if not refresh_token:
        raise PermanentError(
            "Google returned no refresh token",
            hint="Connect again with access_type=offline and prompt=consent so Google issues one.",
        )
    sealed = google_auth(deps).seal_refresh_token(refresh_token, owner=owner, account=account)
    doc_id = integration_id(owner, account)
    now = deps.clock.now()
    granted = sorted(set(scopes))

    def tx(t: Transaction) -> Integration:
        current = repo.tx_get(t, Integration, doc_id)
        if current is None:
            record = Integration(
                id=doc_id,
                owner=owner,
                account=account,
                scopes=granted,
                token_ciphertext=sealed,
                created_at=now,
                updated_at=now,
            )
        else:
            record = current.model_copy(
                update={
                    "scopes": granted,
                    "status": IntegrationStatus.CONNECTED,
                    "token_ciphertext": sealed,
                    "refresh_failures": 0,
                    "status_reason": None,
                    "updated_at": now,
                }
            )
        repo.tx_put(t, record)
        return record

    return IntegrationInfo.of(deps.store.transaction(tx))


def status(deps: Deps, *, owner: str, account: str | None = None) -> list[IntegrationInfo]:
    """``owner``'s Google integrations (one, with ``account``), by account address."""
    filters = [Filter("owner", "==", owner), Filter("provider", "==", "google")]
    if account is not None:
        filters.append(Filter("account", "==", normalize_account(account)))
    records = repo.scan(deps.store, Integration, filters=filters)
    return sorted((IntegrationInfo.of(r) for r in records), key=lambda i: i.account)


def require_connected(deps: Deps, *, owner: str, account: str | None = None) -> IntegrationInfo:
    """A usable integration of ``owner`` (ReconnectRequired if none), so commands fail fast.

    Scopes are checked where they are used (the GoogleAuth adapter), since a
    broad grant covers narrower scopes.
    """
    found = status(deps, owner=owner, account=account)
    usable = [i for i in found if i.status in (IntegrationStatus.CONNECTED, IntegrationStatus.UNHEALTHY)]
    if usable:
        return usable[0]
    broken = [i for i in found if i.status is IntegrationStatus.RECONNECT_REQUIRED]
    if broken:
        raise ReconnectRequired(
            f"Google account {broken[0].account} needs reconnecting: {broken[0].status_reason or 'unknown'}"
        )
    raise ReconnectRequired(
        f"{owner} has no connected Google account" + (f" {account}" if account else ""),
        hint="Connect a Google account in Sluice's integrations first.",
    )


def disconnect(deps: Deps, *, owner: str, account: str) -> IntegrationInfo:
    """Forget the refresh token (the record stays, ``disconnected``, for history)."""
    doc_id = integration_id(owner, account)
    now = deps.clock.now()

    def tx(t: Transaction) -> Integration:
        current = repo.tx_get(t, Integration, doc_id)
        if current is None:
            raise NotFound(f"no Google integration for {normalize_account(account)}")
        updated = current.model_copy(
            update={
                "status": IntegrationStatus.DISCONNECTED,
                "token_ciphertext": None,
                "status_reason": "disconnected by the user",
                "updated_at": now,
            }
        )
        repo.tx_put(t, updated)
        return updated

    return IntegrationInfo.of(deps.store.transaction(tx))
