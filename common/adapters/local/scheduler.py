"""The Scheduler port on the embedded backend: the bus's delayed delivery,
with names that make scheduling idempotent (as Cloud Tasks' named tasks do)."""

from __future__ import annotations

from datetime import datetime

from common.adapters.local.sqlite_bus import SqliteBus
from common.config import Settings
from common.core.messages import Message
from common.topology import Topology


class BusScheduler:
    def __init__(self, bus: SqliteBus, topology: Topology, settings: Settings) -> None:
        self._bus = bus
        self._topology = topology
        self._settings = settings

    def schedule(self, message: Message, *, at: datetime, name: str, queue: str = "normal") -> str:
        topic = self._settings.topic_name(self._topology.topic_for(message.kind))
        attributes = {"kind": message.kind, "queue": queue, **message.log_labels()}
        self._bus.publish_once(name, topic, message.encode(), attributes, deliver_after=at)
        return name
