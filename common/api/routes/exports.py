"""Exports of a completed run: request, list, get (with a signed URL when done)."""

from __future__ import annotations

from common.api import schemas as s
from common.api.call import Call, Reply, Result, Route
from common.api.routes._shared import E404, owned, page, route
from common.core.models import (
    Export,
    Run,
)
from common.ports.store import Filter
from common.service import exports


def _export_out(call: Call, e: Export) -> s.ExportOut:
    return s.ExportOut.of(e, *exports.download_url(call.deps, e))


def create_export(call: Call) -> Result:
    run = owned(call, Run, call.params["run_id"])
    body = call.body_as(s.ExportCreate)
    export = exports.request_export(call.deps, call.sender, run, body.spec())
    return Reply(_export_out(call, export), status=202, headers={"Location": f"/v1/exports/{export.id}"})


def get_export(call: Call) -> Result:
    return _export_out(call, owned(call, Export, call.params["export_id"]))


def list_run_exports(call: Call) -> Result:
    run = owned(call, Run, call.params["run_id"])
    q = call.query_as(s.PageQuery)
    found, cursor = page(call, Export, [Filter("run_id", "==", run.id)], [], q)
    return s.ExportList(items=[_export_out(call, e) for e in found], next_cursor=cursor)


ROUTES: list[Route] = [
    route(
        "POST",
        "/v1/runs/{run_id}/exports",
        create_export,
        "Export a completed run",
        "exports",
        body=s.ExportCreate,
        response=s.ExportOut,
        status=202,
        errors=(401, 404, 409, 422),
    ),
    route(
        "GET",
        "/v1/exports/{export_id}",
        get_export,
        "Get an export (with a signed URL when done)",
        "exports",
        response=s.ExportOut,
        errors=E404,
    ),
    route(
        "GET",
        "/v1/runs/{run_id}/exports",
        list_run_exports,
        "List a run's exports",
        "exports",
        query=s.PageQuery,
        response=s.ExportList,
        errors=E404,
    ),
]
