"""The cleanup stage (hourly): recover work that a crashed attempt left behind.

A task stuck in ``running`` past its lease belonged to a function that timed
out or died without its message being redelivered; cleanup sends its message
again, and the task's claim logic takes it over (or the retry policy fails it).
"""

from __future__ import annotations

import logging

from common.core.messages import CleanupSweep, ExtractTask
from common.core.models import ExtractionTask, format_timestamp
from common.core.states import TaskStatus
from common.obs.logging import fields
from common.ports.store import Filter
from common.service import repo
from common.service.context import Context

log = logging.getLogger(__name__)


def sweep(msg: CleanupSweep, ctx: Context) -> dict[str, int]:
    now = ctx.now()
    requeued = 0
    for task in repo.scan(
        ctx.store,
        ExtractionTask,
        filters=[Filter("status", "==", TaskStatus.RUNNING.value), Filter("lease_until", "<", format_timestamp(now))],
    ):
        ctx.send(ExtractTask(task_id=task.id, run_id=task.run_id, job_id=task.job_id), priority=task.priority)
        requeued += 1
    counts = {"stuck_tasks_requeued": requeued}
    log.info("cleanup done", extra=fields(**counts))
    return counts
