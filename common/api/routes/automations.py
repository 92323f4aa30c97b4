"""Automations: Gmail messages that match a query run a job."""

from __future__ import annotations

from typing import Any

from common.api import schemas as s
from common.api.call import Call, Reply, Result, Route
from common.api.errors import not_found
from common.api.routes._shared import E404, E_BODY, mine, owned, page, route
from common.core.errors import NotFound
from common.core.models import (
    Automation,
    Job,
)
from common.ports.store import Order
from common.service import automation_records


def create_automation(call: Call) -> Result:
    body = call.body_as(s.AutomationCreate)
    job = owned(call, Job, body.job_id)

    def reply(created: Automation) -> Reply:
        return Reply(s.AutomationOut.of(created), status=201, headers={"Location": f"/v1/automations/{created.id}"})

    auto = automation_records.create_automation(
        call.deps,
        job,
        name=body.name,
        enabled=body.enabled,
        account=body.account,
        query=body.query,
        export=body.export.spec(),
        guard=call.guard(reply),
    )
    return reply(auto)


def list_automations(call: Call) -> Result:
    q = call.query_as(s.PageQuery)
    found, cursor = page(call, Automation, [mine(call)], [Order("created_at", "desc")], q)
    return s.AutomationList(items=[s.AutomationOut.of(a) for a in found], next_cursor=cursor)


def get_automation(call: Call) -> Result:
    return s.AutomationOut.of(owned(call, Automation, call.params["automation_id"]))


def update_automation(call: Call) -> Result:
    auto_id = call.params["automation_id"]
    body = call.body_as(s.AutomationUpdate)
    changes: dict[str, Any] = {
        n: getattr(body, n) for n in ("name", "query", "enabled") if getattr(body, n) is not None
    }
    if body.export is not None:
        changes["export"] = body.export.spec()
    try:
        auto = automation_records.update_automation(call.deps, auto_id, owners=call.owners, changes=changes)
    except NotFound:
        raise not_found("automation", auto_id) from None
    return s.AutomationOut.of(auto)


def delete_automation(call: Call) -> Result:
    automation_records.delete_automation(call.deps, owned(call, Automation, call.params["automation_id"]))
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
