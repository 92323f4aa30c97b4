"""Automations: Gmail messages that match a query run a job."""

from __future__ import annotations

from typing import Any

from common.api import schemas as s
from common.api.call import Call, Reply, Result, Route
from common.api.errors import not_found
from common.api.routes._shared import E404, E_BODY, mine, owned, page, route
from common.core.models import (
    Automation,
    Job,
)
from common.ports.store import Order, Transaction
from common.service import ids, integrations, repo


def create_automation(call: Call) -> Result:
    body = call.body_as(s.AutomationCreate)
    job = owned(call, Job, body.job_id)
    now = call.deps.clock.now()
    auto = Automation(
        id=ids.new_id("auto"),
        owner=job.owner,  # an automation acts for its job's owner (and that owner's Google connection)
        name=body.name,
        enabled=body.enabled,
        account=integrations.normalize_account(body.account),
        query=body.query,
        job_id=job.id,
        export=body.export.spec(),
        created_at=now,
        updated_at=now,
    )

    def reply(created: Automation) -> Reply:
        return Reply(s.AutomationOut.of(created), status=201, headers={"Location": f"/v1/automations/{created.id}"})

    guard = call.guard(reply)

    def tx(t: Transaction) -> Automation:
        if guard is not None:
            guard.check(t)
        t.create(Automation.collection, auto.id, auto.to_doc())
        if guard is not None:
            guard.record(t, auto)
        return auto

    return reply(call.deps.store.transaction(tx))


def list_automations(call: Call) -> Result:
    q = call.query_as(s.PageQuery)
    found, cursor = page(call, Automation, [mine(call)], [Order("created_at", "desc")], q)
    return s.AutomationList(items=[s.AutomationOut.of(a) for a in found], next_cursor=cursor)


def get_automation(call: Call) -> Result:
    return s.AutomationOut.of(owned(call, Automation, call.params["automation_id"]))


def update_automation(call: Call) -> Result:
    auto_id = call.params["automation_id"]
    body = call.body_as(s.AutomationUpdate)
    now = call.deps.clock.now()

    def tx(t: Transaction) -> Automation:
        auto = repo.tx_get(t, Automation, auto_id)
        if auto is None or not call.owns(auto.owner):
            raise not_found("automation", auto_id)
        changes: dict[str, Any] = {"updated_at": now}
        for name in ("name", "query", "enabled"):
            value = getattr(body, name)
            if value is not None:
                changes[name] = value
        if body.export is not None:
            changes["export"] = body.export.spec()
        updated = auto.model_copy(update=changes)
        repo.tx_put(t, updated)
        return updated

    return s.AutomationOut.of(call.deps.store.transaction(tx))


def delete_automation(call: Call) -> Result:
    auto = owned(call, Automation, call.params["automation_id"])
    call.deps.store.delete(Automation.collection, auto.id)
    return Reply(status=204)


ROUTES: list[Route] = [
    route(
        "POST",
        "/v1/automations",
        create_automation,
        "Create an automation",
        "automations",
        body=s.AutomationCreate,
        response=s.AutomationOut,
        status=201,
        errors=E_BODY,
    ),
    route(
        "GET",
        "/v1/automations",
        list_automations,
        "List automations",
        "automations",
        query=s.PageQuery,
        response=s.AutomationList,
        errors=(401,),
    ),
    route(
        "GET",
        "/v1/automations/{automation_id}",
        get_automation,
        "Get an automation",
        "automations",
        response=s.AutomationOut,
        errors=E404,
    ),
    route(
        "PATCH",
        "/v1/automations/{automation_id}",
        update_automation,
        "Update an automation",
        "automations",
        body=s.AutomationUpdate,
        response=s.AutomationOut,
        errors=E_BODY,
    ),
    route(
        "DELETE",
        "/v1/automations/{automation_id}",
        delete_automation,
        "Delete an automation",
        "automations",
        status=204,
        errors=E404,
    ),
]
