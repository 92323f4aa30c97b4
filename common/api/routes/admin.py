"""Stats, cost, dead letters, operators' routes and the API's own document.

``/v1/stats`` and ``/v1/dead-letters`` are the caller's own; ``/v1/admin/*``
are for operators (``ApiSettings.operators`` / ``operator_role``), 403 for
everyone else. The figures come from :mod:`common.service.stats` and
:mod:`common.service.cost`; dead letters from the queue port (``Deps.queues``).
"""

from __future__ import annotations

from datetime import UTC, datetime

from flask import Response

from common.api import schemas as s
from common.api.call import Call, Reply, Result, Route
from common.api.errors import ApiError, not_found
from common.api.routes._shared import route
from common.core.breaker import CircuitState
from common.core.errors import NotFound
from common.core.models import Job
from common.ports.queues import Queues
from common.service import cost as cost_service
from common.service import repo, stats_series
from common.service import stats as stats_service


def _require_operator(call: Call) -> None:
    if not call.operator:
        raise ApiError(
            403,
            "operator_only",
            "only operators may do this",
            details={"hint": "Operators are listed in SLUICE_API_OPERATORS or carry SLUICE_API_OPERATOR_ROLE."},
        )


def _month_out(month: stats_service.Spending) -> s.MonthOut:
    u = month.usage
    return s.MonthOut(
        start=month.month_start,
        runs=month.runs,
        input_tokens=u.input_tokens,
        output_tokens=u.output_tokens,
        pages=u.pages,
        cost=u.cost,
        currency=u.currency,
        budget=month.limit,
        remaining=month.remaining,
    )


def _queues(call: Call) -> list[s.QueueStats]:
    return [s.QueueStats.model_validate(q, from_attributes=True) for q in stats_service.queues(call.deps)]


def _circuits(call: Call) -> list[s.CircuitStats]:
    """The shared breakers' states; health of the dependencies, no user's data."""

    def at(epoch: float | None) -> datetime | None:
        return datetime.fromtimestamp(epoch, UTC) if epoch else None

    return [
        s.CircuitStats(
            dependency=dependency,
            state=state.state.value,
            consecutive_failures=state.failures,
            open_until=at(state.open_until) if state.state is not CircuitState.CLOSED else None,
            opened_at=at(state.opened_at),
            opens=state.opens,
            last_error=state.last_error,
        )
        for dependency, state in call.deps.breakers.snapshot().items()
    ]


def _series(call: Call, window: str) -> s.SeriesOut:
    found = stats_series.series(call.deps, call.owners, window)
    return s.SeriesOut.model_validate(found, from_attributes=True)


def stats(call: Call) -> Result:
    q = call.query_as(s.StatsQuery)
    t = stats_service.totals(call.deps, call.owners)
    return s.StatsOut(
        jobs=t.jobs,
        runs=t.runs,
        tasks=t.tasks,
        pages=t.usage.pages,
        input_tokens=t.usage.input_tokens,
        output_tokens=t.usage.output_tokens,
        cost=t.usage.cost,
        currency=t.usage.currency,
        month=_month_out(t.month),
        queues=_queues(call),
        circuits=_circuits(call),
        series=_series(call, q.window),
    )


def global_stats(call: Call) -> Result:
    _require_operator(call)
    t = stats_service.totals(call.deps, None)
    return s.GlobalStatsOut(
        jobs=t.jobs,
        runs=t.runs,
        tasks=t.tasks,
        pages=t.usage.pages,
        input_tokens=t.usage.input_tokens,
        output_tokens=t.usage.output_tokens,
        cost=t.usage.cost,
        currency=t.usage.currency,
        month=_month_out(t.month),
        top_spenders=[s.SpenderOut(owner=o, cost=c) for o, c in t.top_spenders],
        queues=_queues(call),
        circuits=_circuits(call),
    )


def set_budget(call: Call) -> Result:
    _require_operator(call)
    body = call.body_as(s.BudgetIn)
    budget = cost_service.set_budget(call.deps, call.params["owner"], body.monthly_limit)
    return s.BudgetOut(owner=budget.owner, monthly_limit=budget.monthly_limit, updated_at=budget.updated_at)


# -- dead letters -------------------------------------------------------------------------------------------


def _inspector(call: Call) -> Queues:
    if call.deps.queues is None:
        raise ApiError(501, "not_implemented", "this backend has no queue inspection")
    return call.deps.queues


def _dead_letters(call: Call, *, everyone: bool) -> list[s.DeadLetterOut]:
    owners: dict[str, bool] = {}

    def is_mine(job_id: str | None) -> bool:
        if job_id is None:
            return False
        if job_id not in owners:
            found = repo.get(call.deps.store, Job, job_id)
            owners[job_id] = found is not None and call.owns(found[0].owner)
        return owners[job_id]

    local = call.deps.settings.backend == "local"
    out: list[s.DeadLetterOut] = []
    for d in _inspector(call).dead_letters(limit=100_000):
        attrs = d.attributes
        if not everyone and not is_mine(attrs.get("job_id")):
            continue
        out.append(
            s.DeadLetterOut(
                id=d.id,
                seq=int(d.id) if local else None,
                subscription=d.subscription,
                message_id=d.message_id,
                kind=attrs.get("kind"),
                job_id=attrs.get("job_id"),
                run_id=attrs.get("run_id"),
                task_id=attrs.get("task_id"),
                attempts=d.attempts,
                last_error=d.last_error,
                dead_lettered_at=d.dead_lettered_at,
                replayed_at=d.replayed_at,
            )
        )
    return out


def list_dead_letters(call: Call) -> Result:
    return s.DeadLetterList(items=_dead_letters(call, everyone=False))


def list_all_dead_letters(call: Call) -> Result:
    _require_operator(call)
    return s.DeadLetterList(items=_dead_letters(call, everyone=True))


def _replay(call: Call, *, everyone: bool) -> Result:
    dead_letter_id = call.params["dead_letter_id"]
    if not any(d.id == dead_letter_id for d in _dead_letters(call, everyone=everyone)):
        raise not_found("dead letter", dead_letter_id)
    try:
        message_id = _inspector(call).replay(dead_letter_id)
    except NotFound:
        raise not_found("dead letter", dead_letter_id) from None
    seq = int(dead_letter_id) if call.deps.settings.backend == "local" else None
    return Reply(s.ReplayOut(id=dead_letter_id, seq=seq, message_id=message_id), status=202)


def replay_dead_letter(call: Call) -> Result:
    return _replay(call, everyone=False)


def replay_any_dead_letter(call: Call) -> Result:
    _require_operator(call)
    return _replay(call, everyone=True)


def openapi_document(call: Call) -> Result:
    # The app renders the document of the routes it serves (this package never imports the generator).
    return Response(call.api.document(), mimetype="application/json")


ROUTES: list[Route] = [
    route(
        "GET",
        "/v1/stats",
        stats,
        "Your counts, usage, cost and budget; queue and dependency health",
        "stats",
        query=s.StatsQuery,
        response=s.StatsOut,
        errors=(401, 422),
    ),
    route(
        "GET",
        "/v1/dead-letters",
        list_dead_letters,
        "List your dead-lettered messages",
        "stats",
        response=s.DeadLetterList,
        errors=(401, 501),
    ),
    route(
        "POST",
        "/v1/dead-letters/{dead_letter_id}/replay",
        replay_dead_letter,
        "Replay a dead-lettered message",
        "stats",
        response=s.ReplayOut,
        status=202,
        errors=(401, 404, 501),
    ),
    # operators
    route(
        "GET",
        "/v1/admin/stats",
        global_stats,
        "Everyone's counts, usage and top spenders; queues (operators)",
        "admin",
        response=s.GlobalStatsOut,
        errors=(401, 403),
    ),
    route(
        "GET",
        "/v1/admin/dead-letters",
        list_all_dead_letters,
        "List every dead-lettered message (operators)",
        "admin",
        response=s.DeadLetterList,
        errors=(401, 403, 501),
    ),
    route(
        "POST",
        "/v1/admin/dead-letters/{dead_letter_id}/replay",
        replay_any_dead_letter,
        "Replay any dead-lettered message (operators)",
        "admin",
        response=s.ReplayOut,
        status=202,
        errors=(401, 403, 404, 501),
    ),
    route(
        "PUT",
        "/v1/admin/budgets/{owner}",
        set_budget,
        "Set a user's monthly budget (operators)",
        "admin",
        body=s.BudgetIn,
        response=s.BudgetOut,
        errors=(401, 403, 422),
    ),
    route("GET", "/v1/openapi.json", openapi_document, "This document", "meta", auth=False),
]
