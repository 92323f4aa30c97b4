"""Stats, dead letters and the API's own document."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Protocol, runtime_checkable

from flask import Response

from common.api import schemas as s
from common.api.call import Call, Reply, Result, Route
from common.api.errors import ApiError, not_found
from common.api.routes._shared import mine, route
from common.core.breaker import CircuitState
from common.core.errors import NotFound
from common.core.models import (
    ExtractionTask,
    Job,
    Run,
)
from common.core.states import RunStatus, TaskStatus
from common.ports.store import Filter
from common.service import repo


@runtime_checkable
class QueueInspector(Protocol):
    def depth(self, subscription: str) -> int: ...

    def oldest_age_s(self, subscription: str) -> float | None: ...

    def dead_letters(self, subscription: str | None = None, *, limit: int = 100) -> list[Any]: ...

    def replay_dead_letter(self, seq: int) -> str: ...


def _bus(call: Call) -> QueueInspector:
    bus = call.deps.publisher
    if not isinstance(bus, QueueInspector):
        raise ApiError(501, "not_implemented", "queue inspection needs the embedded backend's bus in this build")
    return bus


def _subscriptions(call: Call) -> list[str]:
    from common.runtime.local import subscription_name

    settings = call.deps.settings
    return [
        subscription_name(settings.topic_name(topic), spec.function)
        for topic, spec in call.deps.topology.subscribed_topics().items()
    ]


def stats(call: Call) -> Result:
    store = call.deps.store
    by_owner = [mine(call)]
    runs = {
        st.value: store.count(Run.collection, filters=[*by_owner, Filter("status", "==", st.value)]) for st in RunStatus
    }
    tasks = {
        st.value: store.count(ExtractionTask.collection, filters=[*by_owner, Filter("status", "==", st.value)])
        for st in TaskStatus
    }
    pages = input_tokens = output_tokens = 0
    done = [*by_owner, Filter("status", "==", TaskStatus.COMPLETED.value)]
    for task in repo.scan(store, ExtractionTask, filters=done):
        pages += task.result.pages if task.result is not None else 0
        input_tokens += task.usage.input_tokens or 0
        output_tokens += task.usage.output_tokens or 0
    queues: list[s.QueueStats] = []
    bus = call.deps.publisher
    if isinstance(bus, QueueInspector):
        for sub in _subscriptions(call):
            queues.append(
                s.QueueStats(
                    subscription=sub,
                    depth=bus.depth(sub),
                    oldest_age_s=bus.oldest_age_s(sub),
                    dead_lettered=sum(1 for d in bus.dead_letters(sub, limit=100_000) if d.replayed_at is None),
                )
            )
    return s.StatsOut(
        jobs=store.count(Job.collection, filters=by_owner),
        runs=runs,
        tasks=tasks,
        pages=pages,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        queues=queues,
        circuits=_circuits(call),
    )


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


def _my_dead_letters(call: Call) -> list[s.DeadLetterOut]:
    bus = _bus(call)
    owners: dict[str, bool] = {}

    def is_mine(job_id: str | None) -> bool:
        if job_id is None:
            return False
        if job_id not in owners:
            found = repo.get(call.deps.store, Job, job_id)
            owners[job_id] = found is not None and call.owns(found[0].owner)
        return owners[job_id]

    out: list[s.DeadLetterOut] = []
    for d in bus.dead_letters(limit=100_000):
        attrs: dict[str, str] = d.attributes
        if not is_mine(attrs.get("job_id")):
            continue
        out.append(
            s.DeadLetterOut(
                seq=d.seq,
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
    return s.DeadLetterList(items=_my_dead_letters(call))


def replay_dead_letter(call: Call) -> Result:
    try:
        seq = int(call.params["seq"])
    except ValueError:
        raise not_found("dead letter", call.params["seq"]) from None
    if not any(d.seq == seq for d in _my_dead_letters(call)):
        raise not_found("dead letter", str(seq))
    try:
        message_id = _bus(call).replay_dead_letter(seq)
    except NotFound:
        raise not_found("dead letter", str(seq)) from None
    return Reply(s.ReplayOut(seq=seq, message_id=message_id), status=202)


def openapi_document(call: Call) -> Result:
    # The app renders the document of the routes it serves (this package never imports the generator).
    return Response(call.api.document(), mimetype="application/json")


ROUTES: list[Route] = [
    route(
        "GET", "/v1/stats", stats, "Counts, pages, tokens and queue health", "stats", response=s.StatsOut, errors=(401,)
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
        "/v1/dead-letters/{seq}/replay",
        replay_dead_letter,
        "Replay a dead-lettered message",
        "stats",
        response=s.ReplayOut,
        status=202,
        errors=(401, 404, 501),
    ),
    route("GET", "/v1/openapi.json", openapi_document, "This document", "meta", auth=False),
]
