"""Operations: poll, list, and stream (SSE) long-running work."""

from __future__ import annotations

import time
from typing import Any

from common.api import schemas as s
from common.api.call import Call, Result, Route, iter_sse
from common.api.routes._shared import E404, mine, owned, page, route
from common.api.sse import operation_events as sse_events
from common.core.models import (
    Operation,
    Run,
)
from common.core.progress import compute_progress
from common.core.states import OperationStatus, RunStatus
from common.ports.store import Order
from common.service import repo, tally


def live_operation(call: Call, op_id: str) -> s.OperationOut:
    """The operation as stored, with a run's exact counters and state merged in
    (the stored progress is coalesced to about one write a second)."""
    op = owned(call, Operation, op_id)
    cancelled = 0
    if op.kind == "run":
        found = repo.get(call.deps.store, Run, op.target_id)
        if found is not None:
            run = found[0]
            now = call.deps.clock.now()
            c = tally.live_counters(call.deps.store, run)
            p = compute_progress(
                completed=c.completed, failed=c.failed + c.cancelled, total=c.total, started_at=run.started_at, now=now
            )
            cancelled = c.cancelled
            update: dict[str, Any] = {"done": c.completed, "failed": c.failed, "total": c.total, "pct": p.pct}
            if op.status is OperationStatus.RUNNING:
                update["eta_seconds"] = p.eta_seconds
                if run.status is RunStatus.PAUSED:
                    update["stage"] = "paused"
                elif run.status is RunStatus.PENDING:
                    scheduled = run.schedule_time is not None and run.schedule_time > now
                    update["stage"] = "scheduled" if scheduled else "queued"
                elif run.status is RunStatus.CANCELLED:
                    update.update({"status": OperationStatus.CANCELLED, "stage": "cancelled"})
                elif run.status is RunStatus.FAILED:
                    update.update({"status": OperationStatus.FAILED, "stage": "failed", "error": run.error})
                elif run.status is RunStatus.RUNNING and op.stage in ("queued", "scheduled"):
                    update["stage"] = "extracting"
            op = op.model_copy(update=update)
    return s.OperationOut.of(op, cancelled=cancelled)


def get_operation(call: Call) -> Result:
    return live_operation(call, call.params["operation_id"])


def list_operations(call: Call) -> Result:
    q = call.query_as(s.PageQuery)
    found, cursor = page(call, Operation, [mine(call)], [Order("created_at", "desc")], q)
    return s.OperationList(items=[live_operation(call, op.id) for op in found], next_cursor=cursor)


def operation_events(call: Call) -> Result:
    op_id = call.params["operation_id"]
    live_operation(call, op_id)  # 404 before the stream starts
    api = call.api
    chunks = sse_events(
        lambda: live_operation(call, op_id),
        poll_s=api.settings.sse_poll_s,
        max_s=api.settings.sse_max_s,
        sleep=api.sleep or time.sleep,
    )
    return iter_sse(chunks)


ROUTES: list[Route] = [
    route(
        "GET",
        "/v1/operations/{operation_id}",
        get_operation,
        "Poll an operation",
        "operations",
        response=s.OperationOut,
        errors=E404,
    ),
    route(
        "GET",
        "/v1/operations",
        list_operations,
        "List operations",
        "operations",
        query=s.PageQuery,
        response=s.OperationList,
        errors=(401,),
    ),
    route(
        "GET",
        "/v1/operations/{operation_id}/events",
        operation_events,
        "Stream an operation's progress (SSE)",
        "operations",
        reply="sse",
        errors=E404,
    ),
]
