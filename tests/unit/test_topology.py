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
    for kind in MESSAGE_TYPES:
        if kind.startswith("bench."):
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
    ],
)
def test_an_inconsistent_topology_is_refused_with_the_reason(tmp_path: Path, change: dict, message: str) -> None:  # type: ignore[type-arg]
    bad = tmp_path / "topology.yaml"
    bad.write_text(yaml.safe_dump(_broken(change)))
    with pytest.raises(ConfigError, match=message):
        topology.load(bad)
