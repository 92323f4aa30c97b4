"""Message-id deduplication for the cloud entrypoints.

Pub/Sub redelivers a message that was processed but whose acknowledgement
was lost. Business keys already make every handler idempotent; this is the
cheaper first line: a function remembers the message ids it finished (done
or permanently failed) for a week, Pub/Sub's longest retention, and answers
a repeat with an acknowledgement without running the handler again. Two
deliveries racing each other both run, and the business keys settle it.
"""

from __future__ import annotations

from datetime import timedelta
from typing import ClassVar

from common.core.models import Record, Timestamp
from common.service import repo
from common.service.context import Deps

RETENTION = timedelta(days=7)


class ProcessedMessage(Record):
    collection: ClassVar[str] = "processed_messages"

    function: str
    message_id: str
    outcome: str
    expire_at: Timestamp  # a Firestore TTL policy deletes it then; cleanup does locally


def _id(function: str, message_id: str) -> str:
    return f"{function}:{message_id}"


def already_processed(deps: Deps, function: str, message_id: str) -> bool:
    return deps.store.get(ProcessedMessage.collection, _id(function, message_id)) is not None


def remember(deps: Deps, function: str, message_id: str, outcome: str) -> None:
    now = deps.clock.now()
    repo.create_if_absent(
        deps.store,
        ProcessedMessage(
            id=_id(function, message_id),
            owner="system",
            function=function,
            message_id=message_id,
            outcome=outcome,
            expire_at=now + RETENTION,
            created_at=now,
            updated_at=now,
        ),
    )
