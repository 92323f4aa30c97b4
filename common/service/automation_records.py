"""Automation records: create, change and delete what makes Gmail messages run a job.

(The firing itself is :mod:`common.service.automation`.)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from common.core.errors import NotFound
from common.core.models import Automation, ExportSpec, Job
from common.ports.store import Transaction
from common.service import ids, integrations, repo
from common.service.context import Deps
from common.service.effects import EffectGuard


def create_automation(
    deps: Deps,
    job: Job,
    *,
    name: str,
    enabled: bool,
    account: str,
    query: str,
    export: ExportSpec,
    guard: EffectGuard[Automation] | None = None,
) -> Automation:
    """Record an automation that runs ``job``; it acts for the job's owner (and that
    owner's Google connection). With ``guard``, it is recorded only while the guard holds."""
    now = deps.clock.now()
    auto = Automation(
        id=ids.new_id("auto"),
        owner=job.owner,
        name=name,
        enabled=enabled,
        account=integrations.normalize_account(account),
        query=query,
        job_id=job.id,
        export=export,
        created_at=now,
        updated_at=now,
    )

    def tx(t: Transaction) -> Automation:
        if guard is not None:
            guard.check(t)
        t.create(Automation.collection, auto.id, auto.to_doc())
        if guard is not None:
            guard.record(t, auto)
        return auto

    return deps.store.transaction(tx)


def update_automation(deps: Deps, automation_id: str, *, owners: Sequence[str], changes: dict[str, Any]) -> Automation:
    """Apply ``changes`` in one transaction; NotFound when it is gone or none of ``owners`` owns it."""
    now = deps.clock.now()

    def tx(t: Transaction) -> Automation:
        auto = repo.tx_get(t, Automation, automation_id)
        if auto is None or auto.owner not in owners:
            raise NotFound(f"automation {automation_id} not found")
        updated = auto.model_copy(update={**changes, "updated_at": now})
        repo.tx_put(t, updated)
        return updated

    return deps.store.transaction(tx)


def delete_automation(deps: Deps, automation: Automation) -> None:
    deps.store.delete(Automation.collection, automation.id)
