"""Google Cloud clients, created on first use and reused by every adapter.

A Cloud Function instance serves many invocations; building a client (gRPC
channel, credentials discovery) on each would cost every one of them. Nothing
here runs at import time: each accessor imports its library and builds the
client the first time it is asked, under a lock, and caches it by the
arguments that shape it (project, database, batching) and by the emulator
address in force, so tests that point a process at emulators get clients for
them.

Emulators: Firestore, Pub/Sub and Cloud Storage clients find theirs through
``FIRESTORE_EMULATOR_HOST``, ``PUBSUB_EMULATOR_HOST`` and
``STORAGE_EMULATOR_HOST``. The Cloud Tasks library reads no such variable, so
``CLOUD_TASKS_EMULATOR_HOST`` (``host:port``) is read here and gives an
insecure channel to the emulator.

gRPC channels do not survive ``fork()``: a child process drops the cache and
builds its own clients.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Hashable
from typing import TYPE_CHECKING, Any, Final, TypeVar, cast

if TYPE_CHECKING:  # pragma: no cover
    from google.cloud import firestore, tasks_v2
    from google.cloud.pubsub_v1 import PublisherClient, SubscriberClient
    from google.cloud.storage import Client as StorageClient

T = TypeVar("T")

TASKS_EMULATOR_ENV: Final = "CLOUD_TASKS_EMULATOR_HOST"

_lock = threading.Lock()
_clients: dict[tuple[Hashable, ...], Any] = {}


def _after_fork_in_child() -> None:
    global _lock
    _lock = threading.Lock()
    _clients.clear()  # not closed: the parent still uses the channels


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _cached(key: tuple[Hashable, ...], build: Callable[[], T]) -> T:
    client = _clients.get(key)
    if client is None:
        with _lock:
            client = _clients.get(key)
            if client is None:
                client = _clients[key] = build()
    return cast(T, client)


def firestore_client(project: str | None, database: str = "(default)") -> firestore.Client:
    def build() -> firestore.Client:
        from google.cloud import firestore

        return firestore.Client(project=project, database=database)

    return _cached(("firestore", project, database, os.environ.get("FIRESTORE_EMULATOR_HOST")), build)


def publisher_client(
    *,
    max_messages: int = 100,
    max_bytes: int = 1024 * 1024,
    max_latency_s: float = 0.01,
    ordering: bool = False,
) -> PublisherClient:
    """A publisher with the given batching; ``ordering`` enables ordering keys."""

    def build() -> PublisherClient:
        from google.cloud.pubsub_v1 import PublisherClient, types

        return PublisherClient(
            batch_settings=types.BatchSettings(
                max_messages=max_messages, max_bytes=max_bytes, max_latency=max_latency_s
            ),
            publisher_options=types.PublisherOptions(enable_message_ordering=ordering),
        )

    key = ("pubsub", max_messages, max_bytes, max_latency_s, ordering, os.environ.get("PUBSUB_EMULATOR_HOST"))
    return _cached(key, build)


def subscriber_client() -> SubscriberClient:
    """For pulling dead letters from their hold subscriptions (work subscriptions push)."""

    def build() -> SubscriberClient:
        from google.cloud.pubsub_v1 import SubscriberClient

        return SubscriberClient()

    return _cached(("pubsub-subscriber", os.environ.get("PUBSUB_EMULATOR_HOST")), build)


def storage_client(project: str | None) -> StorageClient:
    def build() -> StorageClient:
        from google.cloud.storage import Client

        if os.environ.get("STORAGE_EMULATOR_HOST"):
            from google.auth.credentials import AnonymousCredentials

            anonymous = AnonymousCredentials()  # type: ignore[no-untyped-call]
            return Client(project=project or "emulated", credentials=anonymous)
        return Client(project=project)

    return _cached(("storage", project, os.environ.get("STORAGE_EMULATOR_HOST")), build)


def tasks_client() -> tasks_v2.CloudTasksClient:
    emulator = os.environ.get(TASKS_EMULATOR_ENV)

    def build() -> tasks_v2.CloudTasksClient:
        from google.cloud import tasks_v2

        if emulator:
            import grpc
            from google.cloud.tasks_v2.services.cloud_tasks.transports import CloudTasksGrpcTransport

            channel = grpc.insecure_channel(emulator)
            return tasks_v2.CloudTasksClient(transport=CloudTasksGrpcTransport(channel=channel))
        return tasks_v2.CloudTasksClient()

    return _cached(("tasks", emulator), build)


def reset() -> None:
    """Forget every cached client (tests that switch emulators; closing is left to GC)."""
    with _lock:
        _clients.clear()
