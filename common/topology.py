"""Load and check ``topology.yaml``, the one description of Sluice's wiring."""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from common.core.errors import ConfigError

DEFAULT_PATH = Path(__file__).resolve().parent.parent / "topology.yaml"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FunctionSpec(_Strict):
    source: str
    entry_point: str
    trigger: str  # "http" or a topic name
    max_instances: int = Field(ge=1)
    concurrency: int = Field(ge=1)
    timeout_s: int = Field(ge=1, le=3600)
    memory: str


class SubscriptionSpec(_Strict):
    function: str
    ack_deadline_s: float = Field(ge=10, le=600)
    max_delivery_attempts: int = Field(ge=5, le=100)
    min_backoff_s: float = Field(ge=0, le=600)
    max_backoff_s: float = Field(ge=0, le=600)
    dead_letter_topic: str | None = None


class TopicSpec(_Strict):
    kinds: list[str] = Field(default_factory=list)
    subscription: SubscriptionSpec | None = None
    dead_letter: bool = False


class ScheduleSpec(_Strict):
    cron: str
    topic: str
    kind: str


class BucketSpec(_Strict):
    finalize: str | None = None
    lifecycle_delete_days: int | None = None


class TaskQueueSpec(_Strict):
    """A priority's Cloud Tasks queue. Its rate limits are not set here: they
    derive from the model quota (:meth:`Topology.task_queue_limits`)."""

    max_attempts: int = Field(ge=1, le=100)


class ModelQuotaSpec(_Strict):
    """The model quota extraction runs against (e.g. Vertex AI requests per
    minute for the project and model). The extract stage paces itself to it
    (SLUICE_MODEL_RPM), and every priority's queue may dispatch up to it."""

    requests_per_minute: int = Field(ge=1)
    # The function that calls the model: its instances x concurrency bound the
    # dispatches a queue may have in flight.
    function: str
    # Over the quota, for the messages that are not model calls (run.start,
    # retries refunded by the pacing) riding the same queues.
    dispatch_headroom: float = Field(ge=1, le=10)


@dataclass(frozen=True)
class QueueLimits:
    max_dispatches_per_second: float
    max_concurrent_dispatches: int


PRIORITY_QUEUES = ("low", "normal", "high", "urgent")
# Cloud Tasks' own ceilings for one queue.
MAX_QUEUE_DISPATCHES_PER_SECOND = 500.0
MAX_QUEUE_CONCURRENT_DISPATCHES = 5000


class Topology(_Strict):
    functions: dict[str, FunctionSpec]
    topics: dict[str, TopicSpec]
    schedules: dict[str, ScheduleSpec] = Field(default_factory=dict)
    buckets: dict[str, BucketSpec] = Field(default_factory=dict)
    task_queues: dict[str, TaskQueueSpec] = Field(default_factory=dict)
    model_quota: ModelQuotaSpec | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Topology:  # noqa: C901 (split pending)
        problems: list[str] = []
        kind_topic: dict[str, str] = {}
        for name, topic in self.topics.items():
            if len(name) < 3:
                problems.append(f"topic {name!r}: names need at least 3 characters")
            for kind in topic.kinds:
                if kind in kind_topic:
                    problems.append(f"kind {kind!r} is carried by both {kind_topic[kind]!r} and {name!r}")
                kind_topic[kind] = name
            sub = topic.subscription
            if sub is None:
                if topic.kinds:
                    problems.append(f"topic {name!r} carries kinds but has no subscription")
                continue
            if sub.function not in self.functions:
                problems.append(f"topic {name!r}: subscriber function {sub.function!r} is not defined")
            elif self.functions[sub.function].trigger != name:
                problems.append(f"topic {name!r}: function {sub.function!r} is triggered by another topic")
            if sub.dead_letter_topic is not None and sub.dead_letter_topic not in self.topics:
                problems.append(f"topic {name!r}: dead-letter topic {sub.dead_letter_topic!r} is not defined")
            if sub.min_backoff_s > sub.max_backoff_s:
                problems.append(f"topic {name!r}: min_backoff_s exceeds max_backoff_s")
        for fname, fn in self.functions.items():
            if fn.trigger != "http" and fn.trigger not in self.topics:
                problems.append(f"function {fname!r}: trigger topic {fn.trigger!r} is not defined")
        for sname, sched in self.schedules.items():
            if sched.topic not in self.topics:
                problems.append(f"schedule {sname!r}: topic {sched.topic!r} is not defined")
            elif sched.kind not in self.topics[sched.topic].kinds:
                problems.append(f"schedule {sname!r}: topic {sched.topic!r} does not carry {sched.kind!r}")
        for bname, bucket in self.buckets.items():
            if (
                bucket.finalize is not None
                and "blob.finalized" not in self.topics.get(bucket.finalize, TopicSpec()).kinds
            ):
                problems.append(f"bucket {bname!r}: finalize topic {bucket.finalize!r} must carry blob.finalized")
        if self.task_queues and set(self.task_queues) != set(PRIORITY_QUEUES):
            problems.append(f"task_queues must be exactly the priorities {', '.join(PRIORITY_QUEUES)}")
        if self.task_queues and self.model_quota is None:
            problems.append("task_queues need model_quota: their dispatch rates derive from it")
        if self.model_quota is not None and self.model_quota.function not in self.functions:
            problems.append(f"model_quota: function {self.model_quota.function!r} is not defined")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def task_queue_limits(self) -> dict[str, QueueLimits]:
        """Each priority queue's rate limits, derived from the model quota.

        Every priority gets the same ceiling: the quota per second with
        headroom, and as many concurrent dispatches as the model-calling
        function can run. An idle system dispatches any priority's work as
        fast as the model can take it; priority only decides which lane waits
        when the model is the bottleneck. (terraform/locals.tf computes the
        same numbers; tests/terraform checks they agree.)
        """
        quota = self.model_quota
        if quota is None:
            return {}
        fn = self.functions[quota.function]
        # Milli-dispatch precision, floored (the Terraform does the same arithmetic).
        per_s = math.floor(quota.requests_per_minute / 60 * quota.dispatch_headroom * 1000) / 1000
        rate = min(MAX_QUEUE_DISPATCHES_PER_SECOND, per_s)
        concurrent = min(MAX_QUEUE_CONCURRENT_DISPATCHES, fn.max_instances * fn.concurrency)
        limits = QueueLimits(max_dispatches_per_second=rate, max_concurrent_dispatches=concurrent)
        return {name: limits for name in self.task_queues}

    def topic_for(self, kind: str) -> str:
        for name, topic in self.topics.items():
            if kind in topic.kinds:
                return name
        raise ConfigError(f"no topic in the topology carries message kind {kind!r}")

    def subscribed_topics(self) -> dict[str, SubscriptionSpec]:
        return {n: t.subscription for n, t in self.topics.items() if t.subscription is not None}

    def function_for(self, topic: str) -> str:
        sub = self.topics[topic].subscription
        if sub is None:
            raise ConfigError(f"topic {topic!r} has no subscriber")
        return sub.function

    def kinds_for_function(self, function: str) -> set[str]:
        return {
            k
            for t in self.topics.values()
            if t.subscription is not None and t.subscription.function == function
            for k in t.kinds
        }

    def kind_of(self, topic: str) -> Literal["dead_letter", "work"]:
        return "dead_letter" if self.topics[topic].dead_letter else "work"


def subscription_name(topic: str, function: str) -> str:
    """A subscription's name, locally and in the cloud (Terraform names it so too)."""
    return f"{topic}--{function}"


def load(path: Path | str | None = None) -> Topology:
    p = Path(path) if path is not None else DEFAULT_PATH
    try:
        raw = yaml.safe_load(p.read_text())
    except FileNotFoundError:
        raise ConfigError(f"topology file {p} not found", hint="Set SLUICE_TOPOLOGY to its path.") from None
    try:
        return Topology.model_validate(raw)
    except ValueError as exc:
        raise ConfigError(f"topology file {p} is invalid: {exc}") from exc


@cache
def default() -> Topology:
    return load()
