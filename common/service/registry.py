"""Which handler serves which message kind, per function.

Handlers are named, not imported, so a function's cold start imports only its
own handlers. ``PUBLISHES`` declares the kinds each function's handlers send;
a test checks every one has a topic in the topology.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from common.core.errors import PermanentError

HANDLERS: dict[str, dict[str, str]] = {
    "extract": {
        "run.start": "common.service.runs:fan_out_run",
        "task.extract": "common.service.runs:extract_task",
    },
    "export": {"export.run": "common.service.exports:export_run"},
    # The built-in ingest kind (common/kinds/ingest.py): search collections' ingest and re-index runs.
    "ingest": {
        "ingest.start": "common.service.runs:fan_out_run",
        "ingest.item": "common.service.runs:run_item",
    },
    # The built-in audit kind (common/kinds/audit.py) on its own function.
    "audit": {
        "audit.start": "common.service.runs:fan_out_run",
        "audit.item": "common.service.runs:run_item",
    },
    "enrich": {
        "enrich.start": "common.service.runs:fan_out_run",
        "enrich.item": "common.service.runs:run_item",
    },
    # The research kind: its start makes the plan (common.service.steps), its finish the report.
    "research": {
        "research.start": "common.service.runs:fan_out_run",
        "research.item": "common.service.runs:run_item",
        "research.finish": "common.service.steps:finish_run",
    },
    "import_upload": {"blob.finalized": "common.service.uploads:register_upload"},
    "cleanup": {
        "cleanup.sweep": "common.service.cleanup:sweep",
        "run.deadline": "common.service.watchdog:run_deadline",
        "item.lease_check": "common.service.watchdog:item_lease_check",
        "gmail.renew_watches": "common.service.watch:renew_watches",
    },
    "import_drive": {
        "drive.import": "common.service.drive_import:start_import",
        "drive.file": "common.service.drive_import:import_file",
    },
    "import_gmail": {
        "gmail.import": "common.service.gmail_import:start_import",
        "gmail.message": "common.service.gmail_import:import_message",
    },
    "automation": {
        "gmail.notification": "common.service.automation:on_notification",
        "automation.imported": "common.service.automation:on_imported",
    },
}

PUBLISHES: dict[str, frozenset[str]] = {
    "extract": frozenset({"task.extract", "export.run", "run.deadline", "item.lease_check"}),
    "export": frozenset(),
    "ingest": frozenset({"ingest.item", "run.deadline", "item.lease_check"}),
    "audit": frozenset({"audit.item", "export.run", "run.deadline", "item.lease_check"}),
    "enrich": frozenset({"enrich.item", "run.deadline", "item.lease_check"}),
    # research.start / research.finish: the plan's and the report's retries, and the finish after the items.
    "research": frozenset(
        {"research.start", "research.item", "research.finish", "export.run", "run.deadline", "item.lease_check"}
    ),
    "import_upload": frozenset(),
    # task.extract (and other kinds' item messages): stuck or stalled items dispatched again.
    "cleanup": frozenset({"task.extract", "audit.item", "enrich.item", "ingest.item", "research.item"}),
    "import_drive": frozenset({"drive.import", "drive.file"}),
    # automation.imported: an import's continuation (Operation.then) set by an automation.
    "import_gmail": frozenset({"gmail.message", "automation.imported"}),
    # gmail.notification: itself again, when one history listing stopped at its page bound.
    "automation": frozenset({"gmail.import", "run.start", "gmail.notification"}),
    # Commands (CLI, API) that start work.
    "commands": frozenset({"run.start", "ingest.start", "audit.start", "enrich.start", "research.start"}),
}

Handler = Callable[[Any, Any], object]
_resolved: dict[str, Handler] = {}


def resolve(function: str, kind: str, table: dict[str, dict[str, str]] | None = None) -> Handler:
    """The handler of ``function`` for ``kind``; PermanentError if it has none."""
    handlers = (table or HANDLERS).get(function, {})
    target = handlers.get(kind)
    if target is None and table is None:
        # A job kind's start and item messages run on the function it declares.
        from common import kinds

        target = kinds.handlers().get(function, {}).get(kind)
    if target is None:
        raise PermanentError(
            f"function {function!r} does not handle message kind {kind!r}",
            code="unhandled_kind",
            hint="Check topology.yaml: the topic routes this kind to the wrong function.",
        )
    handler = _resolved.get(target)
    if handler is None:
        module, _, name = target.partition(":")
        handler = getattr(importlib.import_module(module), name)
        _resolved[target] = handler
    return handler
