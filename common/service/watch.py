"""Gmail watch renewal (daily, on the ``cleanup`` topic): keep push notifications flowing.

A Gmail watch (``users.watch``) lapses after seven days. Once a day every
connected account that has an enabled automation renews its watch to the
``gmail-notifications`` topic (label INBOX) and stores the expiry; an account
whose watch Sluice started but that no longer has an enabled automation gets
``users.stop``. The first watch also records the mailbox's history id, the
baseline the automation function lists changes from.

Why on the cleanup topic (function ``cleanup``) rather than ``automation``:
``cleanup`` runs one instance at a time with a long timeout, so two renewals
never race on one integration, and a flood of pushes on ``gmail-notifications``
(or its dead-lettering) cannot delay the one job that keeps the pushes alive.

A failure (any classified error: quota, 5xx, a refused grant) marks the
integration ``unhealthy`` with the reason, shown by ``integrations.status``;
the next renewal that works makes it ``connected`` again. Seven days of
validity leave six daily retries before pushes stop. A refused grant that the
auth adapter already marked ``reconnect_required`` stays so.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Protocol, cast

from common.core.errors import ConfigError, SluiceError
from common.core.messages import GmailNotification, RenewGmailWatches
from common.core.models import Integration, IntegrationStatus
from common.obs.logging import fields
from common.ports.store import Filter, Transaction
from common.service import repo
from common.service.automation import enabled_automations
from common.service.context import Context, Deps
from common.service.gmail_import import gmail_connector

log = logging.getLogger(__name__)

WATCH_LABELS = ("INBOX",)
_LIVE = (IntegrationStatus.CONNECTED, IntegrationStatus.UNHEALTHY)


class GmailWatchApi(Protocol):
    """What renewal needs of a user's Gmail (``common.adapters.google.gmail.GmailClient``)."""

    def watch(self, topic_name: str, *, label_ids: Sequence[str] = ...) -> tuple[str, datetime]: ...

    def stop(self) -> None: ...


def notifications_topic(deps: Deps) -> str:
    """The full Pub/Sub name Gmail publishes to: the topic carrying ``gmail.notification``."""
    settings = deps.settings
    name = settings.topic_name(deps.topology.topic_for(GmailNotification.kind))
    if settings.backend == "local":
        return f"projects/{settings.project or 'local'}/topics/{name}"
    if not settings.project:
        raise ConfigError("Gmail watches need SLUICE_PROJECT (the project of the notifications topic)")
    return f"projects/{settings.project}/topics/{name}"


def renew_watches(msg: RenewGmailWatches, ctx: Context) -> dict[str, int]:
    """Renew or stop every live Google integration's Gmail watch; counts of each outcome."""
    topic = notifications_topic(ctx.deps)
    counts = {"watches_renewed": 0, "watches_stopped": 0, "watch_failures": 0}
    for integration in repo.scan(ctx.store, Integration, filters=[Filter("provider", "==", "google")]):
        if integration.status not in _LIVE or not integration.token_ciphertext:
            continue
        wanted = bool(enabled_automations(ctx.deps, owner=integration.owner, account=integration.account))
        if not wanted and integration.watch_expires_at is None:
            continue  # Sluice never started a watch here
        ok = renew_watch(ctx.deps, integration, topic) if wanted else stop_watch(ctx.deps, integration)
        if not ok:
            counts["watch_failures"] += 1
        else:
            counts["watches_renewed" if wanted else "watches_stopped"] += 1
    log.info("gmail watches renewed", extra=fields(**counts))
    return counts


def renew_watch(deps: Deps, integration: Integration, topic: str) -> bool:
    """``users.watch`` for one account; True if it worked (else the integration is unhealthy)."""
    try:
        history_id, expires = _client(deps, integration).watch(topic, label_ids=WATCH_LABELS)
    except SluiceError as err:
        _unhealthy(deps, integration, f"Gmail watch renewal failed: {err.message}")
        return False

    def change(current: Integration) -> Integration:
        return current.model_copy(
            update={
                "watch_expires_at": expires,
                # The first watch sets the baseline; later ones never move it (the automation does).
                "history_id": current.history_id or history_id,
                **_healthy(current),
            }
        )

    _update(deps, integration, change)
    log.info("gmail watch renewed", extra=fields(account=integration.account, expires_at=expires.isoformat()))
    return True


def stop_watch(deps: Deps, integration: Integration) -> bool:
    """``users.stop`` for an account with no enabled automation; True if it worked."""
    try:
        _client(deps, integration).stop()
    except SluiceError as err:
        _unhealthy(deps, integration, f"stopping the Gmail watch failed: {err.message}")
        return False
    _update(
        deps, integration, lambda current: current.model_copy(update={"watch_expires_at": None, **_healthy(current)})
    )
    log.info("gmail watch stopped: no enabled automation", extra=fields(account=integration.account))
    return True


def _client(deps: Deps, integration: Integration) -> GmailWatchApi:
    return cast(GmailWatchApi, gmail_connector(deps).connect(integration.owner, integration.account))


def _healthy(current: Integration) -> dict[str, object]:
    if current.status is IntegrationStatus.UNHEALTHY:
        return {"status": IntegrationStatus.CONNECTED, "status_reason": None}
    return {}


def _unhealthy(deps: Deps, integration: Integration, reason: str) -> None:
    log.warning("gmail watch failure; integration unhealthy", extra=fields(account=integration.account, reason=reason))

    def change(current: Integration) -> Integration:
        if current.status not in _LIVE:
            return current  # e.g. reconnect_required, marked by the auth adapter: that says more
        return current.model_copy(update={"status": IntegrationStatus.UNHEALTHY, "status_reason": reason})

    _update(deps, integration, change)


def _update(deps: Deps, integration: Integration, change: Callable[[Integration], Integration]) -> None:
    """Apply ``change`` to the integration as stored now, unless it was reconnected
    (new token) meanwhile."""
    now = deps.clock.now()

    def tx(t: Transaction) -> None:
        current = repo.tx_get(t, Integration, integration.id)
        if current is None or current.token_ciphertext != integration.token_ciphertext:
            return
        updated = change(current)
        if updated != current:
            repo.tx_put(t, updated.model_copy(update={"updated_at": now}))

    deps.store.transaction(tx)
