"""Automations: a Gmail push starts an import -> run -> export chain (function ``automation``).

Flow::

    Gmail push ──▶ [gmail-notifications: gmail.notification] ──▶ on_notification
        history.list since the stored history id ── new message ids
        per enabled automation of the account: which new messages its query matches
        per match: AutomationRun (audit) + start_gmail_import(then=automation.imported)
    import final (done) ── Operation.then ──▶ [gmail-notifications: automation.imported] ──▶ on_imported
        Run (exports = the automation's export) + StartRun ──▶ extract ── fan-in ── Export ──▶ export

Exactly once on an at-least-once bus:

* A firing is keyed by (account, Gmail message id, automation id): the
  AutomationRun's id derives from it and is created if absent, so a message
  starts at most one chain per automation, whatever the redeliveries, older
  pushes or overlapping history listings. The import operation's id and the
  run's id derive from the AutomationRun's, so re-sending a step creates
  nothing new; each step is re-sent from stored state when a redelivery finds
  it unfinished.
* The integration's ``history_id`` only moves forward (compare-and-set in a
  transaction, max of old and new), and only after every match was recorded:
  a crash before it means the next delivery lists the same history again,
  and the derived ids absorb the repeat. A push whose history id is not newer
  than the stored one does nothing.
* History is read one page (:data:`HISTORY_PAGE` records) per pass; after a
  page's matches are recorded the history id moves to its last record and a
  fresh ``gmail.notification`` reads on, so progress is durable and one pass
  never needs more Gmail quota than the shared bucket holds.
* A 404 from history.list (the stored id is older than Gmail keeps) falls
  back to a bounded full sync -- ``messages.list(q="newer_than:2d")``, at most
  :data:`FULL_SYNC_MAX` messages -- and the audit record says so.

Matching a query against just the new messages: Gmail's search syntax is only
evaluated by Gmail, so the query is sent to ``messages.list`` restricted to the
new messages by their RFC 822 Message-IDs: ``(QUERY) {rfc822msgid:A
rfc822msgid:B ...}`` (``{}`` is Gmail's OR). The answer is then at most those
messages (plus copies sharing a Message-ID, removed by intersecting with the
new ids), so one cheap call per automation and batch decides exactly, however
large the mailbox. Listing ``q=QUERY`` alone and intersecting would page
through every old match; evaluating the query ourselves would disagree with
Gmail. A message whose Message-ID is missing or not a plain token is checked
on its own with a two-second ``after:``/``before:`` window around its
``internalDate`` instead. In a full sync the candidates are exactly the
results of ``newer_than:2d``, so each automation's ``(QUERY) newer_than:2d``
intersected with them is exact too, without reading each message.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Callable, Sequence
from typing import Any, Protocol, cast

from common.core.errors import ErrorKind, NotFound, PermanentError, ReconnectRequired, RetryableError, SluiceError
from common.core.messages import (
    AutomationImported,
    GmailItem,
    GmailNotification,
    StartRun,
    continuation,
    from_continuation,
)
from common.core.models import (
    Automation,
    AutomationRun,
    AutomationRunStatus,
    Export,
    Integration,
    IntegrationStatus,
    Job,
    Operation,
    Run,
    SourceType,
)
from common.core.states import ExportStatus, OperationStatus, RunStatus
from common.obs.logging import fields
from common.ports.store import Filter, Transaction
from common.service import ids, jobs, lifecycle_events, repo, tally
from common.service.context import Context, Deps, Sender
from common.service.gmail_import import gmail_connector, gmail_limiter, import_attachments, start_gmail_import
from common.service.integrations import normalize_account

log = logging.getLogger(__name__)

# One pass reads one page of history: about 2 + 5 x HISTORY_PAGE (headers) + 5 per
# automation and batch of MATCH_BATCH (searches) quota units, well under the
# per-user bucket's 250, so a pass paced by the shared limiter always completes.
HISTORY_PAGE = 25
PACING_DELAY_S = 1.0  # the Gmail quota (250 units) renews every second
FULL_SYNC_QUERY = "newer_than:2d"
FULL_SYNC_MAX = 100
MATCH_BATCH = 10  # Message-IDs per search query
MESSAGE_ID_HEADER = "Message-ID"
# A Message-ID Gmail's query parser takes as one token (RFC 5322 allows braces and quotes, which it would not).
_PLAIN_MSGID = re.compile(r"^[A-Za-z0-9._%+=$@!#&*/?^`|~-]+$")
_USABLE = (IntegrationStatus.CONNECTED, IntegrationStatus.UNHEALTHY)
_DONE_STATES = (AutomationRunStatus.COMPLETED, AutomationRunStatus.FAILED)


class GmailAutomationApi(Protocol):
    """What this module needs of a user's Gmail (``common.adapters.google.gmail.GmailClient``)."""

    def added_message_ids(self, start_history_id: str, *, max_results: int = 25) -> tuple[list[str], str, bool]: ...

    def search(self, query: str, *, limit: int = 100) -> list[str]: ...

    def message_headers(self, message_id: str, names: Sequence[str]) -> tuple[dict[str, str], int | None]: ...


HISTORY_EXPIRED = "gmail_history_expired"  # the adapter's code for a 404 from history.list


# -- ids --------------------------------------------------------------------------


def automation_run_id(account: str, message_id: str, automation_id: str) -> str:
    """The one AutomationRun a message can start for an automation."""
    key = f"{normalize_account(account)}\x00{message_id}\x00{automation_id}"
    return "ar_" + hashlib.sha256(key.encode()).hexdigest()[:24]


def import_operation_id(run_id: str) -> str:
    return f"op_{run_id}-import"


def chain_run_id(run_id: str) -> str:
    """The job run an AutomationRun starts (``run_`` + the same digest)."""
    return "run_" + run_id.removeprefix("ar_")


# -- the push ---------------------------------------------------------------------


def on_notification(msg: GmailNotification, ctx: Context) -> None:
    """A Gmail push: find what is new in the mailbox and fire the automations it matches."""
    account = normalize_account(msg.account)
    integrations = [
        i
        for i in repo.scan(ctx.store, Integration, filters=[Filter("account", "==", account)])
        if i.status in _USABLE and i.token_ciphertext
    ]
    if not integrations:
        log.info("push for an address with no connected integration; ignored", extra=fields(account=account))
        return
    for integration in integrations:
        try:
            _process(integration, msg.history_id, ctx)
        except RetryableError as err:
            if err.kind is not ErrorKind.THROTTLED:
                raise
            # Sluice's own Gmail pacing (or Gmail's open circuit): come back later as a fresh message, so that
            # waiting for tokens does not use up delivery attempts (as the import does).
            # Wait for a full bucket, so that a whole pass fits (see HISTORY_PAGE).
            delay = max(err.retry_after or 0.0, PACING_DELAY_S)
            ctx.send(GmailNotification(account=integration.account, history_id=msg.history_id), delay_s=delay)


def _process(integration: Integration, notified: str, ctx: Context) -> None:
    automations = enabled_automations(ctx.deps, owner=integration.owner, account=integration.account)
    if not automations:
        log.info("no enabled automation for this account; push ignored (the watch is stopped on renewal)")
        return
    stored = integration.history_id
    if stored is None:
        # No baseline: what came before this push is not "new". Start from here.
        advance_history(ctx.deps, integration.id, notified)
        log.info("first push for this account: history baseline recorded", extra=fields(history_id=notified))
        return
    if int(notified) <= int(stored):
        log.info("push not newer than the history processed; nothing new", extra=fields(history_id=notified))
        return
    limiter = gmail_limiter(ctx, integration.account)
    try:
        client = cast(
            GmailAutomationApi,
            gmail_connector(ctx.deps).connect(
                integration.owner, integration.account, throttle=lambda units: limiter.acquire(units)
            ),
        )
        source, note, complete = "history", None, True
        try:
            new_ids, latest, complete = client.added_message_ids(stored, max_results=HISTORY_PAGE)
        except PermanentError as err:
            if err.code != HISTORY_EXPIRED:
                raise
            new_ids, latest = client.search(FULL_SYNC_QUERY, limit=FULL_SYNC_MAX), notified
            source = "full_sync"
            note = (
                f"history id {stored} is older than Gmail keeps; fell back to a full sync of at most "
                f"{FULL_SYNC_MAX} messages matching {FULL_SYNC_QUERY!r}"
            )
            log.warning("gmail history expired; full sync of recent messages", extra=fields(found=len(new_ids)))
        if not new_ids:
            matches: dict[str, list[str]] = {}
        elif source == "full_sync":
            matches = match_within(client, automations, new_ids, scope=FULL_SYNC_QUERY)
        else:
            matches = match_automations(client, automations, new_ids)
    except ReconnectRequired as err:
        # The auth adapter has marked the integration; the user must reconnect. Nothing to redo later.
        log.warning("push for an account that needs reconnecting; ignored", extra=fields(error=str(err)))
        return
    by_id = {a.id: a for a in automations}
    fired = 0
    for automation_id, message_ids in matches.items():
        for message_id in message_ids:
            fire(
                ctx.deps,
                ctx.sender,
                by_id[automation_id],
                message_id,
                history_id=notified,
                source=source,
                note=note,
            )
            fired += 1
    if complete:
        newest = max(int(notified), int(latest))
    else:
        # One page per pass: its matches are recorded, so move past it and read on
        # now (a fresh message) rather than wait for the next push.
        newest = int(latest)
        ctx.send(GmailNotification(account=integration.account, history_id=str(max(int(notified), newest + 1))))
    advance_history(ctx.deps, integration.id, str(newest))
    log.info(
        "gmail push processed",
        extra=fields(source=source, new_messages=len(new_ids), fired=fired, history_id=str(newest)),
    )


def enabled_automations(deps: Deps, *, owner: str, account: str) -> list[Automation]:
    found = repo.scan(
        deps.store,
        Automation,
        filters=[Filter("owner", "==", owner), Filter("account", "==", normalize_account(account))],
    )
    return sorted((a for a in found if a.enabled and a.trigger_type == "gmail_attachment"), key=lambda a: a.id)


def advance_history(deps: Deps, integration_id: str, history_id: str) -> bool:
    """Move the integration's history id forward to ``history_id`` (never back); True if it moved."""

    def tx(t: Transaction) -> bool:
        current = repo.tx_get(t, Integration, integration_id)
        if current is None:
            return False
        if current.history_id is not None and int(current.history_id) >= int(history_id):
            return False
        repo.tx_put(t, current.model_copy(update={"history_id": history_id, "updated_at": deps.clock.now()}))
        return True

    return deps.store.transaction(tx)


def match_within(
    client: GmailAutomationApi, automations: Sequence[Automation], message_ids: Sequence[str], *, scope: str
) -> dict[str, list[str]]:
    """Matches among messages that are exactly ``scope``'s results (the full sync): one
    search of ``(QUERY) SCOPE`` per automation, intersected -- no per-message reads."""
    out: dict[str, list[str]] = {}
    for automation in automations:
        query = automation.query.strip() or "in:anywhere"
        found = set(client.search(f"({query}) {scope}", limit=FULL_SYNC_MAX))
        matched = [mid for mid in message_ids if mid in found]
        if matched:
            out[automation.id] = matched
    return out


def match_automations(
    client: GmailAutomationApi, automations: Sequence[Automation], message_ids: Sequence[str]
) -> dict[str, list[str]]:
    """For each automation, the new messages its Gmail query matches (in the given order)."""
    tokens: dict[str, str] = {}
    windows: dict[str, int] = {}
    for mid in message_ids:
        try:
            headers, internal_ms = client.message_headers(mid, [MESSAGE_ID_HEADER])
        except PermanentError as err:
            if err.code == "gmail_not_found":
                continue  # deleted since it arrived
            raise
        token = headers.get(MESSAGE_ID_HEADER, "").strip().strip("<>")
        if token and _PLAIN_MSGID.match(token):
            tokens[mid] = token
        elif internal_ms is not None:
            windows[mid] = internal_ms // 1000
    out: dict[str, list[str]] = {}
    for automation in automations:
        query = automation.query.strip() or "in:anywhere"
        hits: set[str] = set()
        keyed = list(tokens.items())
        for start in range(0, len(keyed), MATCH_BATCH):
            batch = keyed[start : start + MATCH_BATCH]
            alternatives = " ".join(f"rfc822msgid:{token}" for _, token in batch)
            found = set(client.search(f"({query}) {{{alternatives}}}", limit=100))
            hits.update(mid for mid, _ in batch if mid in found)
        for mid, seconds in windows.items():
            found = set(client.search(f"({query}) after:{seconds - 1} before:{seconds + 1}", limit=100))
            if mid in found:
                hits.add(mid)
        matched = [mid for mid in message_ids if mid in hits]
        if matched:
            out[automation.id] = matched
    return out


# -- firing -----------------------------------------------------------------------


def fire(
    deps: Deps,
    sender: Sender,
    automation: Automation,
    message_id: str,
    *,
    history_id: str | None,
    source: str,
    note: str | None = None,
) -> AutomationRun:
    """Start (or, for a redelivery, re-send) the chain of ``automation`` for one Gmail message."""
    record = _record(deps, automation, message_id, history_id=history_id, source=source, note=note)
    if record.status is not AutomationRunStatus.IMPORTING:
        return record
    job = _job_of(deps, record, automation.owner)
    if job is None:
        return _refresh(deps, record.id)
    assert record.import_operation_id is not None
    start_gmail_import(
        deps,
        sender,
        job,
        automation.owner,
        record.account,
        [GmailItem(message_id=message_id)],
        operation_id=record.import_operation_id,
        then=continuation(AutomationImported(automation_run_id=record.id)),
    )
    log.info("automation fired", extra=fields(automation_run_id=record.id, message_id=message_id))
    return record


def _record(
    deps: Deps,
    automation: Automation,
    message_id: str,
    *,
    history_id: str | None,
    source: str,
    note: str | None,
) -> AutomationRun:
    """The firing's audit record, created if absent (the exactly-once key)."""
    run_id = automation_run_id(automation.account, message_id, automation.id)
    now = deps.clock.now()
    record = AutomationRun.model_validate(
        {
            "id": run_id,
            "owner": automation.owner,
            "automation_id": automation.id,
            "job_id": automation.job_id,
            "account": normalize_account(automation.account),
            "message_ids": [message_id],
            "history_id": history_id,
            "source": source,
            "note": note,
            "export": automation.export,
            "import_operation_id": import_operation_id(run_id),
            "created_at": now,
            "updated_at": now,
        }
    )
    if repo.create_if_absent(deps.store, record):
        return record
    log.info("message already fired this automation", extra=fields(automation_run_id=run_id))
    return repo.require(deps.store, AutomationRun, run_id)[0]


def _job_of(deps: Deps, record: AutomationRun, owner: str) -> Job | None:
    """The automation's job, or None after recording the chain as failed because it is gone."""
    found = repo.get(deps.store, Job, record.job_id)
    if found is not None and found[0].owner == owner:
        return found[0]
    err = PermanentError(
        f"automation {record.automation_id}'s job {record.job_id} does not exist",
        code="unknown_job",
        hint="Point the automation at an existing job, or delete the automation.",
    )
    _fail(deps, record.id, err)
    return None


def _fail(deps: Deps, run_id: str, err: SluiceError) -> AutomationRun:
    now = deps.clock.now()

    def tx(t: Transaction) -> AutomationRun:
        current = repo.tx_require(t, AutomationRun, run_id)
        if current.status in _DONE_STATES:
            return current
        failed = current.model_copy(
            update={
                "status": AutomationRunStatus.FAILED,
                "error": err.to_record(),
                "finished_at": now,
                "updated_at": now,
            }
        )
        repo.tx_put(t, failed)
        return failed

    return deps.store.transaction(tx)


# -- the import finished: the run -------------------------------------------------


def on_imported(msg: AutomationImported, ctx: Context) -> None:
    """The chain's import completed: record a run of the job with the automation's
    export and start it (once; a redelivery re-sends the start from stored state)."""
    found = repo.get(ctx.store, AutomationRun, msg.automation_run_id)
    if found is None:
        raise PermanentError(f"automation run {msg.automation_run_id} does not exist", code="unknown_automation_run")
    record = found[0]
    if record.status is AutomationRunStatus.IMPORTING:
        record = start_chain_run(ctx.deps, record)
    if record.status is not AutomationRunStatus.RUNNING or record.run_id is None:
        log.info("automation run is %s; nothing to start", record.status.value)
        return
    found_run = repo.get(ctx.store, Run, record.run_id)
    if found_run is None:
        raise PermanentError(f"the chain's run {record.run_id} does not exist", code="unknown_run")
    run = found_run[0]
    if run.status is RunStatus.PENDING:
        ctx.send(StartRun(run_id=run.id, job_id=run.job_id), priority=run.priority)
    else:
        log.info("the chain's run has started already", extra=fields(run_id=run.id))


def start_chain_run(deps: Deps, record: AutomationRun) -> AutomationRun:
    """Record the chain's run (derived id; run number from the job's counter; the
    job's current fields and files; exports = the automation's) and its Operation,
    and move the audit record to ``running`` -- one transaction."""
    now = deps.clock.now()
    run_id = chain_run_id(record.id)

    created: list[bool] = []  # set by the transaction's last (committed) execution

    def tx(t: Transaction) -> AutomationRun:
        created.clear()
        current = repo.tx_require(t, AutomationRun, record.id)
        job = repo.tx_get(t, Job, current.job_id)
        if current.status is not AutomationRunStatus.IMPORTING:
            return current
        if job is None:
            raise NotFound(f"job {current.job_id} not found")
        run, op, moved = jobs.new_run_records(job, run_id=run_id, now=now, exports=[current.export])
        repo.tx_put(t, moved)
        t.create(Run.collection, run.id, run.to_doc())
        t.create(Operation.collection, op.id, op.to_doc())
        updated = current.model_copy(
            update={
                "status": AutomationRunStatus.RUNNING,
                "run_id": run_id,
                "export_ids": [ids.export_id(run_id, 0, current.export.format.value)],
                "updated_at": now,
            }
        )
        repo.tx_put(t, updated)
        created.append(True)
        return updated

    try:
        started = deps.store.transaction(tx)
    except NotFound as err:
        return _fail(deps, record.id, PermanentError(str(err), code="unknown_job"))
    if created:
        lifecycle_events.run_created()
    return started


# -- the audit record -------------------------------------------------------------


def settle(deps: Deps, run_id: str) -> AutomationRun:
    """Bring the audit record's status up to date with its chain (completed when every
    export completed; failed when the import, the run or an export failed)."""
    return _refresh(deps, run_id)


def _refresh(deps: Deps, run_id: str) -> AutomationRun:
    record = repo.require(deps.store, AutomationRun, run_id)[0]
    if record.status in _DONE_STATES:
        return record
    outcome = _chain_outcome(deps, record)
    if outcome is None:
        return record
    status, error = outcome
    now = deps.clock.now()

    def tx(t: Transaction) -> AutomationRun:
        current = repo.tx_require(t, AutomationRun, run_id)
        if current.status in _DONE_STATES or current.status is not record.status:
            return current
        updated = current.model_copy(update={"status": status, "error": error, "finished_at": now, "updated_at": now})
        repo.tx_put(t, updated)
        return updated

    return deps.store.transaction(tx)


def _chain_outcome(deps: Deps, record: AutomationRun) -> tuple[AutomationRunStatus, dict[str, str] | None] | None:
    """The chain's final state if it has one, read from its import, run and exports."""
    if record.status is AutomationRunStatus.IMPORTING:
        op = repo.get(deps.store, Operation, record.import_operation_id or "")
        if op is not None and op[0].status in (OperationStatus.FAILED, OperationStatus.CANCELLED):
            return AutomationRunStatus.FAILED, op[0].error or {"code": "import_failed", "message": op[0].message}
        return None
    if record.run_id is None:
        return None
    found = repo.get(deps.store, Run, record.run_id)
    if found is None:
        return None
    run = found[0]
    if run.status in (RunStatus.FAILED, RunStatus.CANCELLED):
        return AutomationRunStatus.FAILED, run.error or {"code": f"run_{run.status.value}", "message": "run ended"}
    if run.status is not RunStatus.COMPLETED:
        return None
    exports = [Export.from_doc(s.data) for s in deps.store.get_many(Export.collection, record.export_ids)]
    if len(exports) < len(record.export_ids):
        return None
    failed = [e for e in exports if e.status is ExportStatus.FAILED]
    if failed:
        return AutomationRunStatus.FAILED, failed[0].error or {"code": "export_failed", "message": "export failed"}
    if all(e.status is ExportStatus.COMPLETED for e in exports):
        return AutomationRunStatus.COMPLETED, None
    return None


def describe(deps: Deps, run_id: str) -> dict[str, Any]:
    """The audit record (settled first) with its chain's live state, for people."""
    record = _refresh(deps, run_id)
    out: dict[str, Any] = record.model_dump(mode="json")
    op = repo.get(deps.store, Operation, record.import_operation_id or "")
    out["import"] = None if op is None else {"status": op[0].status.value, "message": op[0].message}
    run = repo.get(deps.store, Run, record.run_id or "")
    out["run"] = (
        None
        if run is None
        else {
            "status": run[0].status.value,
            "run_number": run[0].run_number,
            "counters": tally.live_counters(deps.store, run[0]).model_dump(),
        }
    )
    out["exports"] = [
        {"id": e.id, "status": e.status.value, "rows": e.row_count, "uri": e.external_id, "url": e.url}
        for e in (Export.from_doc(s.data) for s in deps.store.get_many(Export.collection, record.export_ids))
    ]
    return out


# -- offline: a saved e-mail through the same chain -------------------------------


def fire_eml(
    deps: Deps,
    sender: Sender,
    automation: Automation,
    raw: bytes,
    *,
    parse: Callable[[bytes, str], Sequence[Any]],
) -> AutomationRun:
    """Fire ``automation`` for a saved e-mail on the embedded backend: its attachments
    are imported through the ``.eml`` path (``parse(raw, key)`` gives them) instead of
    Gmail; the import's Operation is recorded final with the same continuation, which
    is sent from the stored Operation, so the run -> export chain is the one Gmail uses.

    The Gmail query is not evaluated (that needs Gmail's search): the automation fires.
    """
    key = hashlib.sha256(raw).hexdigest()[:32]
    record = _record(deps, automation, f"eml:{key}", history_id=None, source="simulate", note=None)
    if record.status is not AutomationRunStatus.IMPORTING:
        return record
    job = _job_of(deps, record, automation.owner)
    if job is None:
        return _refresh(deps, record.id)
    outcomes = import_attachments(deps, job, parse(raw, key), source_type=SourceType.UPLOAD)
    op_id = record.import_operation_id or import_operation_id(record.id)
    now = deps.clock.now()
    imported = sum(1 for o in outcomes if o.status in ("imported", "skipped"))
    op = Operation(
        id=op_id,
        owner=automation.owner,
        kind="import",
        target_id=job.id,
        job_id=job.id,
        status=OperationStatus.DONE,
        stage="done",
        message=f"{imported} of {len(outcomes)} attachments imported from the saved e-mail",
        pct=100.0,
        done=1,
        total=1,
        finished_at=now,
        then=continuation(AutomationImported(automation_run_id=record.id)),
        created_at=now,
        updated_at=now,
    )
    repo.create_if_absent(deps.store, op)
    stored = repo.require(deps.store, Operation, op_id)[0]
    if stored.then is not None and stored.status is OperationStatus.DONE:
        sender.send(from_continuation(stored.then))
    return record


def chain_finished(record: AutomationRun) -> bool:
    return record.status in _DONE_STATES
