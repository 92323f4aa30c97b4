"""Record ids. Random where a record is new; derived where redelivery must find
the same record again (a task is its run plus its file)."""

from __future__ import annotations

import uuid
from collections.abc import Mapping


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:20]}"


def task_id(run_id: str, file_id: str) -> str:
    return f"{run_id}--{file_id}"


def export_id(run_id: str, index: int, fmt: str) -> str:
    return f"{run_id}--x{index}-{fmt}"


def operation_id_for_run(run_id: str) -> str:
    return f"op_{run_id}"


def operation_of(labels: Mapping[str, str]) -> str | None:
    """The operation a message's work belongs to, from its labels (``Message.log_labels``):
    its ``operation_id``, else its run's operation."""
    if labels.get("operation_id"):
        return labels["operation_id"]
    run_id = labels.get("run_id")
    return operation_id_for_run(run_id) if run_id else None
