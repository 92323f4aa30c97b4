"""Automations: Gmail push -> import -> run -> export, and Gmail watch renewal.

Gmail is the real google-api-python-client built from the discovery document
it ships (so every request's method, path and parameters are checked against
it), talking to :class:`FakeGmail`: a small in-memory mailbox that answers each
request through the library's own ``HttpMockSequence``. The GoogleAuth port is
a tiny test implementation handing out that http. Nothing inside Sluice is mocked.
"""

from __future__ import annotations

import base64
import io
import json
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest
from googleapiclient.http import HttpMockSequence

from common.adapters.google.gmail import GmailConnector
from common.adapters.offline_model import OfflineExtractor
from common.core.envelopes import decode_push, normalise
from common.core.messages import GmailNotification, RenewGmailWatches, decode
from common.core.models import (
    Automation,
    AutomationRun,
    AutomationRunStatus,
    Export,
    ExportFormat,
    ExportSpec,
    Integration,
    IntegrationStatus,
    Job,
    Operation,
    Run,
)
from common.core.states import ExportStatus, OperationStatus, RunStatus
from common.ports.store import Filter
from common.service import automation, integrations, repo
from tests.support import SAMPLES, SHARED, DuplicatingRuntime, Pipeline, make_pipeline

ACCOUNT = "alice@example.com"
QUERY = "has:attachment subject:invoice"
USERS = "/gmail/v1/users/me"

Answer = tuple[dict[str, str], bytes]


def ok(body: dict[str, Any]) -> Answer:
    return {"status": "200", "content-type": "application/json; charset=UTF-8"}, json.dumps(body).encode()


def error(status: int, reason: str) -> Answer:
    body = {"error": {"code": status, "message": reason, "errors": [{"reason": reason, "message": reason}]}}
    return {"status": str(status), "content-type": "application/json"}, json.dumps(body).encode()


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


# -- a mailbox behind the Gmail API -----------------------------------------------


@dataclass
class Mail:
    id: str
    matches: set[str]  # the queries this message satisfies
    attachments: dict[str, bytes] = field(default_factory=dict)  # file name -> bytes
    rfc822: str | None = None
    internal_ms: int = 1_767_225_600_000
    labels: tuple[str, ...] = ("INBOX",)


class FakeGmail:
    """The ``users.*`` endpoints Sluice calls, over an in-memory mailbox.

    history.list answers what was added after ``startHistoryId`` (404 below
    ``oldest_history``), one record per page; messages.list understands the
    query shapes Sluice sends (``(Q) {rfc822msgid:..}``, ``(Q) after:.. before:..``
    and ``newer_than:2d``); ``fail`` forces an answer for a path.
    """

    def __init__(self) -> None:
        self.mails: dict[str, Mail] = {}
        self.history: list[tuple[int, str]] = []
        self.history_id = 1000
        self.oldest_history = 0
        self.fail: dict[str, Answer] = {}
        self.requests: list[tuple[str, str, dict[str, list[str]], Any]] = []
        self._lock = threading.Lock()

    def add(self, mail: Mail) -> int:
        """Deliver ``mail``; the mailbox's new history id (what Gmail's push carries)."""
        mail.rfc822 = mail.rfc822 if mail.rfc822 is not None else f"<{mail.id}@mail.example.com>"
        self.history_id += 10
        self.mails[mail.id] = mail
        self.history.append((self.history_id, mail.id))
        return self.history_id

    def calls(self, method: str, path: str) -> list[dict[str, list[str]]]:
        return [q for m, p, q, _ in self.requests if m == method and p == USERS + path]

    def request(self, uri: str, method: str = "GET", body: Any = None, headers: Any = None, **kw: Any) -> Any:
        url = urlparse(uri)
        query = parse_qs(url.query)
        with self._lock:
            self.requests.append((method, url.path, query, body))
            answer = self.fail.get(url.path) or self._answer(method, url.path.removeprefix(USERS), query, body)
        return HttpMockSequence([answer]).request(uri, method, body, headers)

    def _answer(self, method: str, path: str, q: dict[str, list[str]], body: Any) -> Answer:
        if (method, path) == ("GET", "/history"):
            return self._history(q)
        if (method, path) == ("GET", "/messages"):
            ids = self._search(q["q"][0])[: int(q.get("maxResults", ["100"])[0])]
            return ok({"messages": [{"id": i, "threadId": i} for i in ids], "resultSizeEstimate": len(ids)})
        if (method, path) == ("POST", "/watch"):
            return ok({"historyId": str(self.history_id), "expiration": "1767830400000"})
        if (method, path) == ("POST", "/stop"):
            return {"status": "204"}, b""
        found = re.fullmatch(r"/messages/([^/]+)(?:/attachments/([^/]+))?", path)
        if method == "GET" and found and found.group(1) in self.mails:
            mail = self.mails[found.group(1)]
            if found.group(2):
                return ok({"size": 1, "data": b64url(mail.attachments[found.group(2)])})
            return self._message(mail, q["format"][0])
        return error(404, "notFound")

    def _history(self, q: dict[str, list[str]]) -> Answer:
        assert q["historyTypes"] == ["messageAdded"]
        start = int(q["startHistoryId"][0])
        if start < self.oldest_history:
            return error(404, "notFound")
        records = [(h, m) for h, m in self.history if h > start]
        size = int(q.get("maxResults", ["100"])[0])
        index = int(q.get("pageToken", ["0"])[0])
        page: dict[str, Any] = {"historyId": str(self.history_id)}
        chunk = records[index : index + size]
        if chunk:
            page["history"] = [
                {
                    "id": str(h),
                    "messagesAdded": [{"message": {"id": m, "threadId": m, "labelIds": list(self.mails[m].labels)}}],
                }
                for h, m in chunk
            ]
        if index + size < len(records):
            page["nextPageToken"] = str(index + size)
        return ok(page)

    def _search(self, text: str) -> list[str]:
        newest = sorted(self.mails.values(), key=lambda m: m.internal_ms, reverse=True)
        if text == "newer_than:2d":
            return [m.id for m in newest]
        scoped = re.fullmatch(r"\((.*)\) newer_than:2d", text)
        if scoped:
            return [m.id for m in newest if scoped.group(1) in m.matches]
        by_msgid = re.fullmatch(r"\((.*)\) \{(.*)\}", text)
        if by_msgid:
            wanted = {t.removeprefix("rfc822msgid:") for t in by_msgid.group(2).split()}
            return [m.id for m in newest if by_msgid.group(1) in m.matches and (m.rfc822 or "").strip("<>") in wanted]
        by_time = re.fullmatch(r"\((.*)\) after:(\d+) before:(\d+)", text)
        if by_time:
            lo, hi = int(by_time.group(2)), int(by_time.group(3))
            return [m.id for m in newest if by_time.group(1) in m.matches and lo < m.internal_ms // 1000 < hi]
        raise AssertionError(f"unexpected Gmail query {text!r}")

    def _message(self, mail: Mail, fmt: str) -> Answer:
        headers = [{"name": "Subject", "value": "invoice"}]
        if mail.rfc822:
            headers.append({"name": "Message-Id", "value": mail.rfc822})  # Gmail keeps the sender's casing
        parts = [
            {
                "partId": str(i + 1),
                "mimeType": "application/pdf",
                "filename": name,
                "headers": [],
                "body": {"size": len(data), "attachmentId": name},
            }
            for i, (name, data) in enumerate(mail.attachments.items())
        ]
        payload: dict[str, Any] = {"partId": "", "mimeType": "multipart/mixed", "filename": "", "headers": headers}
        if fmt == "full":
            text = {"partId": "0", "mimeType": "text/plain", "filename": "", "body": {"size": 2, "data": b64url(b"hi")}}
            payload["parts"] = [text, *parts]
        return ok({"id": mail.id, "threadId": mail.id, "internalDate": str(mail.internal_ms), "payload": payload})


class TinyAuth:
    """The GoogleAuth port for tests: hands out the fake's http."""

    def __init__(self, http: Any) -> None:
        self.http = http

    def authorized_http(self, owner: str, scopes: Sequence[str], *, account: str | None = None) -> Any:
        assert (owner, account) == ("alice", ACCOUNT)
        return self.http


# -- set-up -----------------------------------------------------------------------


@dataclass
class World:
    p: Pipeline
    gmail: FakeGmail
    job: Job
    automation: Automation
    integration_id: str

    def push(self, history_id: int) -> None:
        self.p.sender.send(GmailNotification(account=ACCOUNT, history_id=str(history_id)))

    def audits(self) -> list[AutomationRun]:
        return [automation.settle(self.p.deps, r.id) for r in repo.scan(self.p.deps.store, AutomationRun)]

    def integration(self) -> Integration:
        return repo.require(self.p.deps.store, Integration, self.integration_id)[0]

    def runs(self) -> list[Run]:
        return list(repo.scan(self.p.deps.store, Run, filters=[Filter("job_id", "==", self.job.id)]))

    def imports(self) -> list[Operation]:
        return [o for o in repo.scan(self.p.deps.store, Operation) if o.kind == "import"]


def world(
    p: Pipeline,
    *,
    enabled: bool = True,
    history_id: str | None = "1000",
    export: ExportSpec | None = None,
    watching: bool = False,
) -> World:
    gmail = FakeGmail()
    p.deps.gmail = GmailConnector(TinyAuth(gmail))
    job = p.job()
    now = p.clock.now()
    integration = Integration(
        id=integrations.integration_id("alice", ACCOUNT),
        owner="alice",
        account=ACCOUNT,
        token_ciphertext="sealed-refresh-token",
        history_id=history_id,
        watch_expires_at=now if watching else None,
        created_at=now,
        updated_at=now,
    )
    repo.create(p.deps.store, integration)
    auto = Automation(
        id="au_invoices",
        owner="alice",
        name="invoices",
        account=ACCOUNT,
        query=QUERY,
        job_id=job.id,
        enabled=enabled,
        export=export or ExportSpec(format=ExportFormat.CSV),
        created_at=now,
        updated_at=now,
    )
    repo.create(p.deps.store, auto)
    return World(p, gmail, job, auto, integration.id)


@pytest.fixture
def w(tmp_path: Path) -> World:
    return world(make_pipeline(tmp_path))


def invoice_mail(mid: str, name: str = "ok-1.pdf") -> Mail:
    return Mail(mid, matches={QUERY}, attachments={name: b"%PDF-1.4 " + name.encode()})


def newsletter(mid: str) -> Mail:
    return Mail(mid, matches=set(), attachments={"ok-news.pdf": b"%PDF-1.4 news"})


# -- the push ---------------------------------------------------------------------


def test_gmails_push_envelope_becomes_a_gmail_notification() -> None:
    body = json.loads((SHARED / "fixtures" / "pubsub" / "gmail_push_envelope.doc_example.json").read_text())
    data, attrs = normalise(decode_push(body))
    assert attrs["kind"] == "gmail.notification"
    # The guide's text says 9876543210; the bytes say 1234567890.
    assert decode(attrs["kind"], data) == GmailNotification(account="user@example.com", history_id="1234567890")


def test_a_push_with_two_new_messages_one_matching_runs_one_chain(w: World) -> None:
    w.gmail.add(newsletter("m-news"))
    latest = w.gmail.add(invoice_mail("m-inv"))
    w.push(latest)
    w.p.drain()

    (audit,) = w.audits()
    assert audit.status is AutomationRunStatus.COMPLETED
    assert (audit.account, audit.message_ids, audit.history_id, audit.source) == (
        ACCOUNT,
        ["m-inv"],
        str(latest),
        "history",
    )
    (imp,) = w.imports()
    assert (imp.id, imp.status) == (audit.import_operation_id, OperationStatus.DONE)
    (run,) = w.runs()
    assert (run.id, run.status, run.run_number) == (audit.run_id, RunStatus.COMPLETED, 1)
    assert run.exports == [ExportSpec(format=ExportFormat.CSV)]
    (export,) = w.p.exports(run.id)
    assert ([export.id], export.status) == (audit.export_ids, ExportStatus.COMPLETED)
    assert "ok-1#0" in w.p.export_text(export)
    assert [f.name for f in w.p.files(w.job.id)] == ["ok-1.pdf"]  # the newsletter was not imported
    assert w.integration().history_id == str(latest)
    (listing,) = w.gmail.calls("GET", "/history")
    assert (listing["startHistoryId"], listing["maxResults"]) == (["1000"], ["25"])


def test_each_firing_runs_the_job_again_with_the_next_run_number(w: World) -> None:
    w.push(w.gmail.add(invoice_mail("m-1")))
    w.p.drain()
    w.push(w.gmail.add(invoice_mail("m-2", "ok-2.pdf")))
    w.p.drain()
    assert sorted(r.run_number for r in w.runs()) == [1, 2]
    assert {a.status for a in w.audits()} == {AutomationRunStatus.COMPLETED}


def test_duplicate_and_out_of_order_pushes_still_run_one_chain(tmp_path: Path) -> None:
    w = world(make_pipeline(tmp_path, runtime_cls=DuplicatingRuntime))
    older = w.gmail.add(newsletter("m-news"))
    newer = w.gmail.add(invoice_mail("m-inv"))
    w.push(newer)  # DuplicatingRuntime delivers it (and every follow-up) three times
    w.p.drain()
    history_calls = len(w.gmail.calls("GET", "/history"))
    w.push(older)  # arrives late: not newer than what was processed
    w.p.drain()

    assert len(w.gmail.calls("GET", "/history")) == history_calls
    (audit,) = w.audits()
    assert audit.status is AutomationRunStatus.COMPLETED
    assert len(w.imports()) == 1
    (run,) = w.runs()
    assert len(w.p.exports(run.id)) == 1
    assert len(w.p.files(w.job.id)) == 1
    assert repo.require(w.p.deps.store, Job, w.job.id)[0].next_run_number == 2
    assert w.integration().history_id == str(newer)


def test_a_message_listed_again_after_a_crash_before_the_history_moved_starts_nothing_new(w: World) -> None:
    latest = w.gmail.add(invoice_mail("m-inv"))
    w.push(latest)
    w.p.drain()
    # As if the first delivery died after firing but before advancing the history id.
    stale = w.integration().model_copy(update={"history_id": "1000"})
    repo.put(w.p.deps.store, stale)
    w.push(latest)
    w.p.drain()
    assert len(w.gmail.calls("GET", "/history")) == 2  # it did list the same history again
    assert len(w.audits()) == 1
    assert len(w.imports()) == 1
    assert len(w.runs()) == 1


def test_a_push_newer_than_the_last_finds_only_what_is_new(w: World) -> None:
    w.push(w.gmail.add(invoice_mail("m-1")))
    w.p.drain()
    w.push(w.gmail.add(newsletter("m-2")))
    w.p.drain()
    assert [a.message_ids for a in w.audits()] == [["m-1"]]
    assert w.gmail.calls("GET", "/history")[-1]["startHistoryId"] == [str(w.gmail.history_id - 10)]


def test_a_long_history_is_read_a_page_per_pass_paced_by_the_gmail_quota(w: World) -> None:
    for i in range(52):  # three pages of 25 records
        w.gmail.add(newsletter(f"m-news-{i}"))
    latest = w.gmail.add(invoice_mail("m-inv"))
    w.push(latest)
    w.p.drain(advance_clock=True)  # the shared Gmail bucket holds about one and a half passes
    (audit,) = w.audits()
    assert audit.message_ids == ["m-inv"] and audit.status is AutomationRunStatus.COMPLETED
    starts = [q["startHistoryId"][0] for q in w.gmail.calls("GET", "/history")]
    # Each pass starts after the last record of the one before (a pass the pacing cut short is read again).
    assert list(dict.fromkeys(starts)) == ["1000", "1250", "1500"]
    assert w.integration().history_id == str(latest)


def test_a_stale_history_id_falls_back_to_a_bounded_full_sync_and_says_so(w: World) -> None:
    w.gmail.add(newsletter("m-news"))
    latest = w.gmail.add(invoice_mail("m-inv"))
    w.gmail.oldest_history = 5000  # the stored 1000 is older than Gmail keeps
    w.push(latest)
    w.p.drain()

    (audit,) = w.audits()
    assert (audit.source, audit.message_ids, audit.status) == ("full_sync", ["m-inv"], AutomationRunStatus.COMPLETED)
    assert audit.note is not None and "full sync" in audit.note and "1000" in audit.note
    (listing,) = [q for q in w.gmail.calls("GET", "/messages") if q["q"] == ["newer_than:2d"]]
    assert int(listing["maxResults"][0]) <= 100
    assert [q["q"] for q in w.gmail.calls("GET", "/messages")] == [["newer_than:2d"], [f"({QUERY}) newer_than:2d"]]
    assert w.integration().history_id == str(latest)


def test_a_message_without_a_message_id_is_matched_by_its_time(w: World) -> None:
    w.push(w.gmail.add(Mail("m-bare", {QUERY}, {"ok-bare.pdf": b"%PDF-1.4 x"}, rfc822="")))
    w.p.drain()
    (audit,) = w.audits()
    assert audit.message_ids == ["m-bare"]
    assert any("after:" in q["q"][0] for q in w.gmail.calls("GET", "/messages"))


def test_a_disabled_automation_does_not_fire(tmp_path: Path) -> None:
    w = world(make_pipeline(tmp_path), enabled=False)
    w.push(w.gmail.add(invoice_mail("m-inv")))
    w.p.drain()
    assert w.audits() == []
    assert w.gmail.requests == []


def test_the_first_push_without_a_baseline_records_it_and_fires_nothing(tmp_path: Path) -> None:
    w = world(make_pipeline(tmp_path), history_id=None)
    latest = w.gmail.add(invoice_mail("m-inv"))
    w.push(latest)
    w.p.drain()
    assert w.audits() == []
    assert w.integration().history_id == str(latest)


def test_a_chain_whose_job_is_gone_is_recorded_failed(w: World) -> None:
    w.p.deps.store.delete(Job.collection, w.job.id)
    w.push(w.gmail.add(invoice_mail("m-inv")))
    w.p.drain()
    (audit,) = w.audits()
    assert audit.status is AutomationRunStatus.FAILED
    assert audit.error is not None and audit.error["code"] == "unknown_job"


def test_a_gmail_invoice_pdf_ends_up_as_a_row_of_an_xlsx_export(tmp_path: Path) -> None:
    import openpyxl

    p = make_pipeline(tmp_path)
    settings = p.deps.settings
    p.deps.extractor_factory = lambda _name: OfflineExtractor(
        p.deps.blobs, max_bytes=settings.max_document_bytes, max_pages=settings.max_document_pages
    )
    w = world(p, export=ExportSpec(format=ExportFormat.XLSX))
    pdf = (SAMPLES / "uk_invoice.pdf").read_bytes()
    w.push(w.gmail.add(Mail("m-uk", {QUERY}, {"uk_invoice.pdf": pdf})))
    p.drain()

    (audit,) = w.audits()
    assert audit.status is AutomationRunStatus.COMPLETED
    export = repo.require(p.deps.store, Export, audit.export_ids[0])[0]
    assert (export.format, export.row_count) == (ExportFormat.XLSX, 1)
    assert export.external_id is not None
    sheet = openpyxl.load_workbook(io.BytesIO(p.deps.blobs.get_bytes(export.external_id))).active
    assert sheet is not None
    rows = list(sheet.iter_rows(values_only=True))
    row = dict(zip(rows[0], rows[1], strict=False))
    assert (row["invoice_number"], row["seller"], row["source_file"]) == (
        "HF-10482",
        "Hartwell & Finch Ltd",
        "uk_invoice.pdf",
    )
    assert float(row["total"]) == pytest.approx(1999.8)


# -- watch renewal ----------------------------------------------------------------


def renew(w: World) -> None:
    w.p.sender.send(RenewGmailWatches())
    w.p.drain()


def test_renewal_watches_the_inbox_to_the_notifications_topic_and_stores_the_expiry(tmp_path: Path) -> None:
    w = world(make_pipeline(tmp_path), history_id=None)
    renew(w)
    ((_, _, _, body),) = [r for r in w.gmail.requests if r[1].endswith("/watch")]
    assert json.loads(body) == {
        "topicName": "projects/local/topics/gmail-notifications",
        "labelIds": ["INBOX"],
        "labelFilterBehavior": "include",
    }
    i = w.integration()
    assert i.watch_expires_at is not None and i.watch_expires_at.isoformat() == "2026-01-08T00:00:00+00:00"
    assert (i.status, i.history_id) == (IntegrationStatus.CONNECTED, "1000")  # the baseline pushes start from


def test_a_failing_renewal_marks_the_integration_unhealthy_with_the_reason(w: World) -> None:
    w.gmail.fail[USERS + "/watch"] = error(403, "forbidden")
    renew(w)
    (info,) = integrations.status(w.p.deps, owner="alice")
    assert info.status is IntegrationStatus.UNHEALTHY
    assert info.status_reason is not None and "Gmail watch renewal failed" in info.status_reason
    assert w.integration().watch_expires_at is None

    del w.gmail.fail[USERS + "/watch"]
    renew(w)  # the next renewal that works heals it
    (info,) = integrations.status(w.p.deps, owner="alice")
    assert (info.status, info.status_reason) == (IntegrationStatus.CONNECTED, None)


def test_an_account_whose_automation_is_disabled_gets_its_watch_stopped(tmp_path: Path) -> None:
    w = world(make_pipeline(tmp_path), enabled=False, watching=True)
    renew(w)
    assert [(m, p) for m, p, _, _ in w.gmail.requests] == [("POST", USERS + "/stop")]
    assert w.integration().watch_expires_at is None
    renew(w)  # nothing is watched any more: nothing to stop
    assert len(w.gmail.requests) == 1


# -- offline ----------------------------------------------------------------------


def test_simulate_feeds_a_saved_email_through_the_chain_and_prints_the_audit(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import argparse
    from email.message import EmailMessage

    from common.automation_cli import cmd_simulate

    mail = EmailMessage()
    mail["Subject"] = "Invoice HF-10482"
    mail.set_content("attached")
    pdf = (SAMPLES / "uk_invoice.pdf").read_bytes()
    mail.add_attachment(pdf, maintype="application", subtype="pdf", filename="uk_invoice.pdf")
    eml = tmp_path / "invoice.eml"
    eml.write_bytes(bytes(mail))
    args = argparse.Namespace(
        eml=eml, account="Alice@Example.com", data_dir=tmp_path / "data", timeout=60.0, log_level="WARNING"
    )

    assert cmd_simulate(args) == 0
    (line,) = capsys.readouterr().out.splitlines()
    audit = json.loads(line)
    assert (audit["status"], audit["source"], audit["account"]) == ("completed", "simulate", ACCOUNT)
    assert audit["run"]["run_number"] == 1
    assert [(e["status"], e["rows"]) for e in audit["exports"]] == [("completed", 1)]
    (export,) = audit["exports"]
    assert export["url"] is None, "no server serves the link: the file is named instead"
    assert Path(export["path"]).is_file()

    assert cmd_simulate(args) == 0  # the same e-mail again: the same firing, no second chain
    (again,) = capsys.readouterr().out.splitlines()
    assert json.loads(again)["id"] == audit["id"] and json.loads(again)["run"]["run_number"] == 1
