"""The Scheduler port on Cloud Tasks: a named task per scheduled message.

Each task is an HTTP POST, at ``schedule_time``, of a Pub/Sub ``publish``
request for the message's topic, so the message reaches its subscriber the
way every other message does. The target defaults to the Pub/Sub REST API
(``https://pubsub.googleapis.com/v1/projects/P/topics/T:publish``); a relay
endpoint can be named instead (``push_url``, a template with ``{project}`` and
``{topic}``).

Authentication: Google APIs (``*.googleapis.com``) take an OAuth access
token, which Cloud Tasks mints for ``service_account_email``; any other
target (a relay function) gets an OIDC token for that account with the URL as
audience. The queue's caller needs ``iam.serviceAccounts.actAs`` on it.

Idempotence: the task name is derived from the caller's name, so scheduling
the same name twice creates one task; Cloud Tasks answers AlreadyExists for
the second and the name is returned as if it had been created. Names are
restricted to ``[A-Za-z0-9_-]`` (at most 500); others are hashed.

With ``CLOUD_TASKS_EMULATOR_HOST`` set and no ``push_url``, tasks target the
Pub/Sub emulator (``PUBSUB_EMULATOR_HOST``) over plain HTTP.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Final
from urllib.parse import urlparse

from common.adapters.gcp import clients
from common.config import Settings
from common.core.messages import Message
from common.obs import tracing
from common.topology import Topology

if TYPE_CHECKING:  # pragma: no cover
    from common.ports.scheduler import Scheduler

PUBSUB_API: Final = "https://pubsub.googleapis.com/v1/projects/{project}/topics/{topic}:publish"
_NAME_RE: Final = re.compile(r"[A-Za-z0-9_-]{1,500}")
_CLOUD_PLATFORM: Final = "https://www.googleapis.com/auth/cloud-platform"


def task_id(name: str) -> str:
    """A Cloud Tasks task id for ``name``: itself if allowed, else a stable hash."""
    if _NAME_RE.fullmatch(name):
        return name
    readable = re.sub(r"[^A-Za-z0-9_-]", "-", name)[:80]
    return f"{readable}-{hashlib.sha256(name.encode()).hexdigest()[:32]}"


class CloudTasksScheduler:
    def __init__(
        self,
        project: str,
        location: str,
        topology: Topology,
        settings: Settings,
        *,
        service_account_email: str | None,
        push_url: str | None = None,
        queue_prefix: str = "",
    ) -> None:
        self._project = project
        self._location = location
        self._topology = topology
        self._settings = settings
        self._service_account = service_account_email
        self._push_url = push_url
        self._queue_prefix = queue_prefix

    def queue_path(self, queue: str) -> str:
        return f"projects/{self._project}/locations/{self._location}/queues/{self._queue_prefix}{queue}"

    def schedule(self, message: Message, *, at: datetime, name: str, queue: str = "normal") -> str:
        topic = self._settings.topic_name(self._topology.topic_for(message.kind))
        attributes = {"kind": message.kind, "queue": queue, **message.log_labels()}
        tracing.inject(attributes)  # a scheduled run continues the trace that asked for it
        self.schedule_publish(topic, message.encode(), attributes, at=at, name=name, queue=queue)
        return name

    def _url(self, topic: str) -> str:
        if self._push_url is not None:
            return self._push_url.format(project=self._project, topic=topic)
        emulated_pubsub = os.environ.get("PUBSUB_EMULATOR_HOST")
        if os.environ.get(clients.TASKS_EMULATOR_ENV) and emulated_pubsub:
            return f"http://{emulated_pubsub}/v1/projects/{self._project}/topics/{topic}:publish"
        return PUBSUB_API.format(project=self._project, topic=topic)

    def schedule_publish(
        self,
        topic: str,
        data: bytes,
        attributes: Mapping[str, str],
        *,
        at: datetime,
        name: str | None = None,
        queue: str = "normal",
    ) -> str:
        """Publish ``data`` to ``topic`` at ``at``; returns the task's full name."""
        from google.api_core import exceptions as gexc
        from google.cloud import tasks_v2
        from google.protobuf import timestamp_pb2

        if at.tzinfo is None:
            raise ValueError("schedule times must be timezone-aware")
        url = self._url(topic)
        body = json.dumps(
            {"messages": [{"data": base64.b64encode(data).decode("ascii"), "attributes": dict(attributes)}]}
        ).encode()
        request = tasks_v2.HttpRequest(
            url=url,
            http_method=tasks_v2.HttpMethod.POST,
            headers={"Content-Type": "application/json"},
            body=body,
        )
        if self._service_account:
            if (urlparse(url).hostname or "").endswith(".googleapis.com"):
                request.oauth_token = tasks_v2.OAuthToken(
                    service_account_email=self._service_account, scope=_CLOUD_PLATFORM
                )
            else:
                request.oidc_token = tasks_v2.OidcToken(service_account_email=self._service_account, audience=url)
        when = timestamp_pb2.Timestamp()
        when.FromDatetime(at)
        parent = self.queue_path(queue)
        task = tasks_v2.Task(http_request=request, schedule_time=when)
        if name is not None:
            task.name = f"{parent}/tasks/{task_id(name)}"
        try:
            created = clients.tasks_client().create_task(parent=parent, task=task)
        except gexc.AlreadyExists:
            return str(task.name)  # scheduled before under this name: once is enough
        return str(created.name)


if TYPE_CHECKING:

    def _conforms(s: CloudTasksScheduler) -> Scheduler:
        return s
