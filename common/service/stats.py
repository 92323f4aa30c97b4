"""Stats: one user's, everyone's (for operators), and each queue's.

Counts are count aggregations (cheap on Firestore); money and tokens add up
runs' usage (recorded once when a run completes, summed from its tasks while
it is open), never every task of every run.

Queue backlog: the bus's own figures where it has them (the embedded bus:
messages, oldest due message, dead letters). On Pub/Sub the work
subscriptions push, so a pull would steal deliveries, and Cloud Monitoring's
figures (minutes late, absent from the emulator) are on the operators'
dashboard already; there the backlog is the store's open work items per
subscription (``source="store"``): the tasks, runs and exports whose messages
that subscription carries, pending or running, and the oldest one's age.
Dead letters are counted from the hold subscriptions.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from common.core import cost
from common.core.models import Export, ExtractionTask, Job, Record, Run, format_timestamp
from common.core.states import ExportStatus, RunStatus, TaskStatus
from common.ports.store import Filter, Order
from common.service import cost as costs
from common.service import repo
from common.service.context import Deps
from common.topology import subscription_name

# The records whose work waits in a message of each kind, and their open statuses.
_WORK: dict[str, tuple[type[Record], tuple[str, ...]]] = {
    "task.extract": (ExtractionTask, (TaskStatus.PENDING.value, TaskStatus.RUNNING.value)),
    "run.start": (Run, (RunStatus.PENDING.value,)),
    "export.run": (Export, (ExportStatus.PENDING.value, ExportStatus.RUNNING.value)),
}


@dataclass(frozen=True)
class QueueStat:
    subscription: str
    depth: int | None
    oldest_age_s: float | None
    dead_lettered: int
    source: Literal["bus", "store", "none"]


@dataclass(frozen=True)
class Spending:
    month_start: datetime
    usage: cost.Usage
    runs: int
    limit: float | None = None

    @property
    def remaining(self) -> float | None:
        return None if self.limit is None else round(self.limit - self.usage.cost, 6)


@dataclass(frozen=True)
class Totals:
    jobs: int
    runs: dict[str, int]
    tasks: dict[str, int]
    usage: cost.Usage
    month: Spending
    top_spenders: list[tuple[str, float]] = field(default_factory=list)


def _owner(owners: Sequence[str]) -> list[Filter]:
    return [Filter("owner", "==", owners[0]) if len(owners) == 1 else Filter("owner", "in", list(owners))]


def totals(deps: Deps, owners: Sequence[str] | None) -> Totals:
    """Counts and usage of ``owners``' records (None: everyone's)."""
    store = deps.store
    mine = [] if owners is None else _owner(owners)
    runs = {
        st.value: store.count(Run.collection, filters=[*mine, Filter("status", "==", st.value)]) for st in RunStatus
    }
    tasks = {
        st.value: store.count(ExtractionTask.collection, filters=[*mine, Filter("status", "==", st.value)])
        for st in TaskStatus
    }
    usage = cost.Usage()
    for run in repo.scan(store, Run, filters=mine):
        usage = usage + costs.run_usage(deps, run)
    return Totals(
        jobs=store.count(Job.collection, filters=mine),
        runs=runs,
        tasks=tasks,
        usage=usage,
        month=_month(deps, owners),
        top_spenders=[] if owners is not None else _top_spenders(deps),
    )


def _month(deps: Deps, owners: Sequence[str] | None) -> Spending:
    start = cost.month_start(deps.clock.now())
    usage = cost.Usage()
    runs = 0
    if owners is not None:
        found = costs.runs_since(deps, owners, start)
    else:
        found = list(repo.scan(deps.store, Run, filters=[_since(start)]))
    for run in found:
        runs += 1
        usage = usage + costs.run_usage(deps, run)
    limit = None if owners is None else costs.budget_limit(deps, owners[0])
    return Spending(month_start=start, usage=usage, runs=runs, limit=limit)


def _since(start: datetime) -> Filter:
    return Filter("created_at", ">=", format_timestamp(start))


def _top_spenders(deps: Deps, n: int = 20) -> list[tuple[str, float]]:
    spent: dict[str, float] = {}
    for run in repo.scan(deps.store, Run, filters=[_since(cost.month_start(deps.clock.now()))]):
        spent[run.owner] = spent.get(run.owner, 0.0) + costs.run_usage(deps, run).cost
    ranked = sorted(spent.items(), key=lambda item: (-item[1], item[0]))[:n]
    return [(owner, round(money, 6)) for owner, money in ranked if money > 0]


def queues(deps: Deps) -> list[QueueStat]:
    """Each subscription of the topology: backlog and dead letters."""
    inspector = deps.queues
    settings = deps.settings
    subs = {
        subscription_name(settings.topic_name(topic), spec.function): topic
        for topic, spec in deps.topology.subscribed_topics().items()
    }
    if inspector is None:
        return [QueueStat(sub, None, None, 0, "none") for sub in subs]
    found: list[QueueStat] = []
    dead: Counter[str] | None = None
    for sub, topic in subs.items():
        backlog = inspector.backlog(sub)
        if backlog is not None:
            found.append(QueueStat(sub, backlog.depth, backlog.oldest_age_s, backlog.dead_lettered, "bus"))
            continue
        if dead is None:  # one peek of the hold subscriptions serves every subscription
            dead = Counter(d.subscription for d in inspector.dead_letters(limit=100_000))
        depth, age = _open_work(deps, deps.topology.topics[topic].kinds)
        found.append(QueueStat(sub, depth, age, dead[sub], "store" if depth is not None else "none"))
    return found


def _open_work(deps: Deps, kinds: Sequence[str]) -> tuple[int | None, float | None]:
    counted = [_WORK[k] for k in kinds if k in _WORK]
    if not counted:
        return None, None
    depth = 0
    oldest: datetime | None = None
    for model, statuses in counted:
        status = Filter("status", "in", list(statuses))
        depth += deps.store.count(model.collection, filters=[status])
        page = deps.store.query(model.collection, filters=[status], order_by=[Order("created_at", "asc")], limit=1)
        if page.items:
            created = model.from_doc(page.items[0].data).created_at
            oldest = created if oldest is None else min(oldest, created)
    age = None if oldest is None else max(0.0, (deps.clock.now() - oldest).total_seconds())
    return depth, age
