"""Operations: poll, list, and stream (SSE) long-running work."""

from __future__ import annotations

import time

from common.api import schemas as s
from common.api.call import Call, Result, Route, iter_sse
from common.api.routes._shared import E404, mine, owned, page, route
from common.api.sse import operation_events as sse_events
from common.core import operations
from common.core.models import (
    Operation,
    Run,
)
from common.ports.store import ChangeFeed, Order
from common.service import repo, tally


def live_operation(call: Call, op_id: str) -> s.OperationOut:
    """The operation with its run's exact counters and state (:func:`common.core.operations.live_operation`)."""
    op = owned(call, Operation, op_id)
    run = repo.get(call.deps.store, Run, op.target_id) if op.kind == "run" else None
    if run is None:
        return s.OperationOut.of(op, cancelled=0)
    counters = tally.live_counters(call.deps.store, run[0])
    live = operations.live_operation(op, run[0], counters, call.deps.clock.now())
    return s.OperationOut.of(live, cancelled=counters.cancelled)


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
    store = call.deps.store
    # The embedded store wakes the stream when a write commits (unless a test drives the clock).
    changes = store if isinstance(store, ChangeFeed) and api.sleep is None else None
    chunks = sse_events(
        lambda: live_operation(call, op_id),
        poll_s=api.settings.sse_poll_s,
        max_s=api.settings.sse_max_s,
        sleep=api.sleep or time.sleep,
        changes=changes,
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
