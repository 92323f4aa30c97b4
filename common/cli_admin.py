"""``sluice jobs``, ``sluice runs [JOB]``, ``sluice items RUN`` and ``sluice dead-letters [--replay SEQ]``.

The verbs are generic: a job of any kind lists the same way, and a run's work
items (documents, rows, chunks...) are listed by ``sluice items``.

They look into a data directory as its owner does: every job in it, whoever
created it (the CLI, ``import-eml``, the API's users). Listing only reads, so
it works while ``sluice run`` or ``sluice serve`` holds the directory; a
replay processes the message at once and therefore takes the directory's lock.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from common.cli_support import FAILED, OK, UsageError, add_common, add_data_dir, data_dir_lock, load_settings
from common.core.states import TaskStatus

if TYPE_CHECKING:
    from common.service.context import Deps


def add_admin_commands(sub: Any) -> None:
    jobs = sub.add_parser("jobs", help="list the jobs in the data directory, newest last")
    _kind_flag(jobs)
    _json_flag(jobs)
    add_data_dir(jobs)
    jobs.set_defaults(func=cmd_jobs)

    runs = sub.add_parser("runs", help="list runs (of one job, or all), newest last")
    runs.add_argument("job", nargs="?", metavar="JOB_ID", help="only this job's runs (default: every job's)")
    _kind_flag(runs)
    _json_flag(runs)
    add_data_dir(runs)
    runs.set_defaults(func=cmd_runs)

    items = sub.add_parser("items", help="list a run's work items (documents, rows...) with their attempts")
    items.add_argument("run", metavar="RUN_ID", help="the run (sluice runs lists them)")
    items.add_argument(
        "--status",
        choices=[st.value for st in TaskStatus],
        help="only items in this state (default: all)",
    )
    _json_flag(items)
    add_data_dir(items)
    items.set_defaults(func=cmd_items)

    dead = sub.add_parser(
        "dead-letters",
        help="list messages that could not be processed; --replay one",
        description=(
            "Messages that failed every attempt (or can never succeed) are kept as dead letters with their last "
            "error. --replay delivers one again as a new message and processes what is ready at once."
        ),
    )
    dead.add_argument("--replay", type=int, metavar="SEQ", help="deliver this dead letter again (default: just list)")
    dead.add_argument(
        "--all", action="store_true", help="also list dead letters that were already replayed (default: off)"
    )
    _json_flag(dead)
    add_common(dead, quiet=False)
    dead.set_defaults(func=cmd_dead_letters)


def _kind_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--kind", metavar="KIND", help="only jobs of this kind, e.g. extract (default: every kind)")


def kind_of(record: Any) -> str:
    """A job's or run's kind (records made before kinds existed are extract jobs)."""
    return str(record.kind)


def _json_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="one JSON object per line instead of a table (default: off)")


def _deps(data_dir: Path) -> Deps:
    from common.bootstrap import bootstrap

    if not (data_dir / "state.db").exists():
        raise UsageError(
            f"no sluice data in {data_dir} (sluice run creates it; --data-dir or SLUICE_DATA_DIR names another)"
        )
    return bootstrap(load_settings(data_dir))


def _when(ts: datetime | None) -> str:
    return "" if ts is None else ts.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def _print(rows: Sequence[dict[str, Any]], columns: Sequence[str], *, as_json: bool, empty: str) -> None:
    if as_json:
        for r in rows:
            print(json.dumps(r, ensure_ascii=False, default=str))
        return
    if not rows:
        print(empty)
        return
    cells = [[str(r.get(c, "") if r.get(c) is not None else "") for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    print("  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip())
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())


def cmd_jobs(args: argparse.Namespace) -> int:
    from common.core.models import Job, SourceFile
    from common.ports.store import Filter, Order
    from common.service import jobs, repo

    deps = _deps(args.data_dir)
    rows = []
    for job in repo.scan(deps.store, Job, order_by=[Order("created_at"), Order("id")]):
        if args.kind is not None and kind_of(job) != args.kind:
            continue
        last = jobs.latest_run(deps, job.id)
        rows.append(
            {
                "job": job.id,
                "name": job.name,
                "kind": kind_of(job),
                "owner": job.owner,
                "files": deps.store.count(SourceFile.collection, filters=[Filter("job_id", "==", job.id)]),
                "runs": job.next_run_number - 1,
                "last_run": None if last is None else f"{last.run_number} {last.status.value}",
                "created": _when(job.created_at),
            }
        )
    empty = "no jobs yet (sluice run, sluice import-eml or the API create them)"
    columns = ["job", "name", "kind", "owner", "files", "runs", "last_run", "created"]
    _print(rows, columns, as_json=args.json, empty=empty)
    return OK


def cmd_runs(args: argparse.Namespace) -> int:
    from common.core.errors import NotFound
    from common.core.models import Job, Run
    from common.ports.store import Filter, Order
    from common.service import repo, tally

    deps = _deps(args.data_dir)
    filters = []
    if args.job is not None:
        if repo.get(deps.store, Job, args.job) is None:
            raise NotFound(f"job {args.job} not found", hint="sluice jobs lists the jobs in this data directory.")
        filters.append(Filter("job_id", "==", args.job))
    rows = []
    for run in repo.scan(deps.store, Run, filters=filters, order_by=[Order("created_at"), Order("id")]):
        if args.kind is not None and kind_of(run) != args.kind:
            continue
        c = tally.live_counters(deps.store, run)
        rows.append(
            {
                "run": run.id,
                "job": run.job_id,
                "number": run.run_number,
                "status": run.status.value,
                "kind": kind_of(run),
                "items": f"{c.completed} ok, {c.failed} failed, {c.total} total",
                "created": _when(run.created_at),
                "finished": _when(run.finished_at),
                "error": (run.error or {}).get("message"),
            }
        )
    columns = ["run", "job", "number", "status", "kind", "items", "created", "finished", "error"]
    _print(rows, columns, as_json=args.json, empty="no runs yet")
    return OK


def cmd_items(args: argparse.Namespace) -> int:
    from common.core.errors import NotFound
    from common.core.models import ExtractionTask, Run
    from common.ports.store import Filter, Order
    from common.service import repo

    deps = _deps(args.data_dir)
    if repo.get(deps.store, Run, args.run) is None:
        raise NotFound(f"run {args.run} not found", hint="sluice runs lists the runs in this data directory.")
    filters = [Filter("run_id", "==", args.run)]
    if args.status is not None:
        filters.append(Filter("status", "==", args.status))
    rows = [
        {
            "item": item.id,
            "name": item.file_name,
            "status": item.status.value,
            "attempts": item.attempts,
            "started": _when(item.started_at),
            "finished": _when(item.finished_at),
            "error": " ".join(((item.error or {}).get("message") or "").split())[:200] or None,
        }
        for item in repo.scan(deps.store, ExtractionTask, filters=filters, order_by=[Order("id")])
    ]
    columns = ["item", "name", "status", "attempts", "started", "finished", "error"]
    _print(rows, columns, as_json=args.json, empty="no items" if args.status is None else f"no {args.status} items")
    return OK


def cmd_dead_letters(args: argparse.Namespace) -> int:
    from common.obs import logging as slog

    slog.configure(args.log_level, "text")
    if args.replay is not None:
        return _replay(args)
    from common.bootstrap import local_bus

    bus = local_bus(_deps(args.data_dir))
    rows = [
        {
            "seq": d.seq,
            "subscription": d.subscription,
            "kind": d.attributes.get("kind"),
            "job": d.attributes.get("job_id"),
            "attempts": d.attempts,
            "dead_lettered": _when(d.dead_lettered_at),
            "replayed": _when(d.replayed_at),
            "error": " ".join((d.last_error or "").split())[:200],
        }
        for d in bus.dead_letters(limit=100_000)
        if args.all or d.replayed_at is None
    ]
    columns = ["seq", "subscription", "kind", "job", "attempts", "dead_lettered", "replayed", "error"]
    _print(rows, columns, as_json=args.json, empty="no dead letters")
    return OK


def _replay(args: argparse.Namespace) -> int:
    from common.bootstrap import local_app
    from common.core.errors import NotFound

    with data_dir_lock(args.data_dir):
        app = local_app(deps=_deps(args.data_dir))
        bus, runtime = app.bus, app.runtime
        letter = next((d for d in bus.dead_letters(limit=100_000) if d.seq == args.replay), None)
        if letter is None:
            raise NotFound(f"dead letter {args.replay} not found", hint="sluice dead-letters lists them.")
        message_id = bus.replay_dead_letter(args.replay)
        # Processes everything that is ready, the replayed message among it; retries that wait stay queued.
        runtime.drain()
        again = next((d for d in bus.dead_letters(limit=100_000) if d.message_id == message_id), None)
        waiting = bus.depth(letter.subscription)
    said = f"dead letter {args.replay} replayed as message {message_id}"
    if again is not None:
        print(f"{said}; it failed again (dead letter {again.seq}): {' '.join((again.last_error or '').split())}")
        return FAILED
    if waiting:
        print(f"{said}; {waiting} message(s) of {letter.subscription} wait for a retry (sluice serve processes them)")
        return OK
    print(f"{said} and processed")
    return OK
