"""topology.yaml is the one description of the wiring: these tests keep it
consistent with the handlers and with the functions that exist."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from common import topology
from common.core.errors import ConfigError
from common.core.messages import MESSAGE_TYPES
from common.service.registry import HANDLERS, PUBLISHES, resolve

REPO = Path(__file__).resolve().parents[2]
TOPO = topology.load(REPO / "topology.yaml")


def test_every_kind_a_handler_publishes_has_a_topic() -> None:
    for function, kinds in PUBLISHES.items():
        for kind in kinds:
            assert TOPO.topic_for(kind), f"{function} publishes {kind}"


def test_every_kind_a_topic_carries_is_handled_by_its_subscriber() -> None:
    for name, topic in TOPO.topics.items():
        for kind in topic.kinds:
            assert topic.subscription is not None
            assert kind in HANDLERS[topic.subscription.function], f"{name} carries {kind}"
            assert callable(resolve(topic.subscription.function, kind))


def test_every_handled_kind_reaches_its_function() -> None:
    for function, handlers in HANDLERS.items():
        assert set(handlers) <= TOPO.kinds_for_function(function), function


def test_every_work_message_kind_has_a_topic() -> None:
    for kind, cls in MESSAGE_TYPES.items():
        # bench.*: the benchmark's own; common.kinds: a test-only job kind's messages, on its own topology.
        if kind.startswith("bench.") or cls.__module__ == "common.kinds":
            continue
        assert TOPO.topic_for(kind)


def test_every_deployable_function_has_its_source_and_entry_point() -> None:
    for name, fn in TOPO.functions.items():
        source = REPO / fn.source
        assert source.is_dir(), f"{name}: {fn.source} is missing"
        main = source / "main.py"
        if main.exists():
            assert f"{fn.entry_point} =" in main.read_text() or f"def {fn.entry_point}(" in main.read_text()


def test_every_function_with_a_main_is_in_the_topology() -> None:
    for main in (REPO / "functions").glob("*/main.py"):
        assert main.parent.name in TOPO.functions


def test_scheduled_jobs_and_bucket_triggers_point_at_real_topics() -> None:
    assert TOPO.schedules["cleanup-hourly"].topic == "cleanup"
    assert TOPO.buckets["uploads"].finalize == "uploads"


def _broken(change: dict) -> dict:  # type: ignore[type-arg]
    raw = yaml.safe_load((REPO / "topology.yaml").read_text())
    for path, value in change.items():
        node = raw
        keys = path.split(".")
        for k in keys[:-1]:
            node = node[k]
        node[keys[-1]] = value
    return raw  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"topics.extract.subscription.dead_letter_topic": "nowhere"}, "dead-letter topic 'nowhere'"),
        ({"topics.export.kinds": ["export.run", "task.extract"]}, "carried by both"),
        ({"schedules.cleanup-hourly.kind": "task.extract"}, "does not carry"),
        ({"topics.extract.subscription.function": "ghost"}, "'ghost' is not defined"),
        ({"buckets.uploads.finalize": "export"}, "must carry blob.finalized"),
        ({"topics.extract.subscription.max_delivery_attempts": 3}, "greater than or equal to 5"),
        ({"model_quota.function": "ghost"}, "model_quota: function 'ghost' is not defined"),
        ({"model_quota": None}, "task_queues need model_quota"),
        ({"task_queues.low": {"max_attempts": 10, "max_dispatches_per_second": 1}}, "Extra inputs"),
    ],
)
def test_an_inconsistent_topology_is_refused_with_the_reason(tmp_path: Path, change: dict, message: str) -> None:  # type: ignore[type-arg]
    bad = tmp_path / "topology.yaml"
    bad.write_text(yaml.safe_dump(_broken(change)))
    with pytest.raises(ConfigError, match=message):
        topology.load(bad)


def test_every_priority_queue_dispatches_at_the_model_quota_with_headroom() -> None:
    quota = TOPO.model_quota
    assert quota is not None
    fn = TOPO.functions[quota.function]
    limits = TOPO.task_queue_limits()
    assert set(limits) == set(topology.PRIORITY_QUEUES)
    for limit in limits.values():
        # Never below what the model can take: an idle system is not capped by its queues.
        assert limit.max_dispatches_per_second >= quota.requests_per_minute / 60
        assert limit.max_dispatches_per_second == pytest.approx(
            quota.requests_per_minute / 60 * quota.dispatch_headroom
        )
        assert limit.max_concurrent_dispatches == fn.max_instances * fn.concurrency


@pytest.mark.parametrize(
    ("rpm", "headroom", "per_second"),
    [(60, 1.0, 1.0), (300, 1.5, 7.5), (1000, 1.2, 20.0), (100, 1.0, 1.666), (60_000, 1.5, 500.0)],
)
def test_queue_rates_follow_the_quota_up_to_cloud_tasks_ceiling(
    tmp_path: Path, rpm: int, headroom: float, per_second: float
) -> None:
    path = tmp_path / "topology.yaml"
    path.write_text(
        yaml.safe_dump(_broken({"model_quota.requests_per_minute": rpm, "model_quota.dispatch_headroom": headroom}))
    )
    limits = topology.load(path).task_queue_limits()
    assert {limit.max_dispatches_per_second for limit in limits.values()} == {per_second}
