"""What the kind commands (``sluice enrich``, ``sluice research``, ``sluice audit``) share.

Each finds its job again by a key derived from what the command asked, so
running the same command again resumes its run rather than starting over;
each waits for the run with a live line on stderr and says how it ended.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from collections.abc import Callable
from typing import IO, TYPE_CHECKING, Any, Literal, TypeVar

from pydantic import BaseModel

from common.cli_support import FAILED, UsageError
from common.core.errors import SluiceError

if TYPE_CHECKING:
    from common.core.models import Job, Run
    from common.service.context import Deps, TopologySender

LOCAL_OWNER = "local"
POLL_S = 0.2

M = TypeVar("M", bound=BaseModel)
How = Literal["resumed", "finished", "new"]


def validated(model: type[M], raw: dict[str, Any]) -> M:
    """``raw`` as ``model``; a value that does not validate is a usage error naming its option."""
    from pydantic import ValidationError

    try:
        return model.model_validate(raw)
    except ValidationError as err:
        first = err.errors(include_url=False)[0]
        raise UsageError(f"{'.'.join(str(p) for p in first['loc'])}: {first['msg']}") from None


def job_key(kind: str, ident: Any) -> str:
    """The key a command's job is found by again: what the command asked, for this kind."""
    blob = json.dumps({"kind": kind, "ident": ident}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def resume_or_start(deps: Deps, sender: TopologySender, job: Job, *, keep_finished: bool) -> tuple[Run, How]:
    """The job's unfinished run (a paused one is resumed; a pending one's start is sent again, its
    first send may have been lost), its completed run when ``keep_finished``, or a new run."""
    from common import kinds
    from common.core.states import RunStatus
    from common.service import control, jobs

    run = jobs.latest_run(deps, job.id)
    if run is not None and run.status in (RunStatus.PENDING, RunStatus.RUNNING, RunStatus.PAUSED):
        if run.status is RunStatus.PAUSED:
            run = control.resume_run(deps, sender, run.id, owner=LOCAL_OWNER)
        elif run.status is RunStatus.PENDING:
            sender.send(kinds.get(run.kind).start(run))
        return run, "resumed"
    if run is not None and run.status is RunStatus.COMPLETED and keep_finished:
        return run, "finished"
    return jobs.request_run(deps, sender, job), "new"


def wait(deps: Deps, run: Run, show: Callable[[Run], None]) -> Run:
    """Poll the run until it ends or is paused, calling ``show`` with each reading."""
    from common.core.models import Run
    from common.core.states import RunStatus
    from common.service import repo

    stops = (RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED, RunStatus.PAUSED)
    while True:
        run = repo.require(deps.store, Run, run.id)[0]
        show(run)
        if run.status in stops:
            return run
        time.sleep(POLL_S)


def unfinished(run: Run, job: Job) -> int | None:
    """How a run that did not complete ends the command (None: it completed).

    Failed or cancelled raise with the run's error; paused says how to go on and exits 1.
    """
    from common.core.states import RunStatus

    if run.status is RunStatus.FAILED:
        err = run.error or {}
        raise SluiceError(err.get("message", f"run {run.run_number} failed"), hint=err.get("hint"))
    if run.status is RunStatus.CANCELLED:
        raise SluiceError(f"run {run.run_number} of job {job.id} was cancelled")
    if run.status is RunStatus.PAUSED:
        print(f"run: {run.id} paused; run the same command again to resume", file=sys.stderr)
        return FAILED
    return None


def say(quiet: bool, text: str) -> None:
    if not quiet:
        print(f"sluice: {text}", file=sys.stderr)


class LiveLine:
    """One line of progress, rewritten in place on a terminal; a line per change elsewhere."""

    def __init__(self, out: IO[str], *, enabled: bool) -> None:
        self._out = out
        self._enabled = enabled
        self._tty = out.isatty()
        self._last = ""

    def show(self, line: str) -> None:
        if not self._enabled or not line or line == self._last:
            return
        self._last = line
        self._out.write(("\r\x1b[K" + line) if self._tty else (line + "\n"))
        self._out.flush()

    def close(self) -> None:
        if self._enabled and self._tty and self._last:
            self._out.write("\n")
            self._out.flush()
