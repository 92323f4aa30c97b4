"""The Gemini extractor with the real google-genai client against a fake Vertex AI server.

Each test scripts the fake's replies (tests/fakes/vertex.py) and checks what
the extractor returns or raises, and what the client sent. Nothing sleeps:
the fake answers at once and time is a ManualClock.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import threading
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from google.oauth2.credentials import Credentials
from pypdf import PdfReader, PdfWriter

from common.adapters.gcp.gemini import PROMPT_VERSION, GeminiExtractor
from common.adapters.local.clock import ManualClock
from common.adapters.local.fs_blobs import FsBlobStore
from common.adapters.local.sqlite_store import SqliteStore
from common.core.errors import ErrorKind, MalformedModelOutput, PermanentError, RetryableError
from common.core.leases import QuotaPlan
from common.core.ratelimit import BucketConfig
from common.core.schema import INVOICE_PRESET, DocumentExtraction, FieldSpec, FieldType
from common.core.states import RunStatus, TaskStatus
from common.ports.blobs import BlobInfo
from common.ports.extractor import DocumentRef
from common.service.leased_ratelimit import LeasedRateLimiter
from common.service.ratelimit import StoreRateLimiter
from tests.fakes.vertex import FakeVertex, RecordedRequest, Reply, answer, error, rate_limited, unavailable
from tests.support import REPO_ROOT, Pipeline, make_pipeline

MODEL = "gemini-2.5-flash"
GS_DOC = DocumentRef(
    uri="gs://uploads/jobs/j1/files/f1/inv.pdf", name="inv.pdf", mime_type="application/pdf", size=None
)
INVOICE_NAMES = [f.name for f in INVOICE_PRESET]
INVOICE_ROW = ["F-2024-001", "2024-05-10", 119.0, "EUR", "ACME GmbH", "Globex SA"]
LINE_ITEMS = (
    FieldSpec(name="invoice_number"),
    FieldSpec(name="description", description="One line item's description."),
    FieldSpec(name="quantity", type=FieldType.INTEGER),
    FieldSpec(name="amount", type=FieldType.NUMBER),
)


def invoice_answer(*rows: list[Any], pages: list[int] | None = None, **kw: Any) -> Reply:
    rows_ = [list(r) for r in rows] or [INVOICE_ROW]
    return answer({"columns": INVOICE_NAMES, "results": rows_, "pages": pages or [1] * len(rows_)}, **kw)


def pdf_bytes(pages: int) -> bytes:
    w = PdfWriter()
    for _ in range(pages):
        w.add_blank_page(width=595, height=842)
    buf = io.BytesIO()
    w.write(buf)
    return buf.getvalue()


class GcsBlobs:
    """Cloud Storage's side of the BlobStore port, in memory: what the extractor
    reads of ``gs://`` documents (their size and page tree) and writes (parts)."""

    scheme = "gs"

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}

    def put_bytes(self, uri: str, data: bytes, **_: Any) -> None:
        self.objects[uri] = data

    def put_stream(self, uri: str, stream: Any, **_: Any) -> None:
        self.objects[uri] = stream.read()

    def open(self, uri: str) -> io.BytesIO:
        return io.BytesIO(self.objects[uri])

    def get_bytes(self, uri: str, *, max_bytes: int | None = None) -> bytes:
        raise AssertionError("gs:// documents are sent by reference, never read whole")

    def stat(self, uri: str) -> BlobInfo | None:
        if uri not in self.objects:
            return None
        return BlobInfo(uri, "uploads", uri, len(self.objects[uri]), None, datetime.now(UTC), "1")


@pytest.fixture
def gcs() -> GcsBlobs:
    blobs = GcsBlobs()
    blobs.put_bytes(GS_DOC.uri, pdf_bytes(2))
    return blobs


@pytest.fixture
def fake() -> Iterator[FakeVertex]:
    with FakeVertex() as f:
        yield f
    assert f.unscripted == 0, "the extractor made calls the test did not script"


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def blobs(tmp_path: Path, clock: ManualClock) -> FsBlobStore:
    return FsBlobStore(tmp_path / "blobs", clock=clock, durable=False)


def make_extractor(fake: FakeVertex, blobs: Any, clock: Any, **kw: Any) -> GeminiExtractor:
    return GeminiExtractor(
        project="test-project",
        location="europe-west1",
        model=MODEL,
        blobs=blobs,
        clock=clock,
        credentials=Credentials(token="test"),  # type: ignore[no-untyped-call]
        http_base_url=fake.base_url,
        **kw,
    )


@pytest.fixture
def extractor(fake: FakeVertex, gcs: GcsBlobs, clock: ManualClock) -> GeminiExtractor:
    return make_extractor(fake, gcs, clock)


def extract_error(ex: GeminiExtractor, doc: DocumentRef = GS_DOC) -> BaseException:
    with pytest.raises((RetryableError, PermanentError)) as info:
        ex.extract(doc, INVOICE_PRESET)
    return info.value


# -- a good answer ---------------------------------------------------------------------


def test_a_good_answer_becomes_rows_with_usage_and_model_version(fake, extractor) -> None:
    fake.push(invoice_answer(input_tokens=1500, output_tokens=90, model_version="gemini-2.5-flash-002"))
    ex = extractor.extract(GS_DOC, INVOICE_PRESET)
    assert ex.columns == INVOICE_NAMES
    assert ex.results == [INVOICE_ROW]
    assert ex.row_pages == [1]
    assert ex.method == "gemini" and ex.model == MODEL
    assert ex.model_version == "gemini-2.5-flash-002"
    assert ex.prompt_version == PROMPT_VERSION
    assert (ex.input_tokens, ex.output_tokens) == (1500, 90)
    assert ex.latency_ms is not None and ex.latency_ms >= 0
    assert ex.fields["total"].value == 119.0 and ex.fields["total"].source == "model"


def test_the_request_carries_the_gs_file_part_the_schema_and_the_rules(fake, extractor) -> None:
    fake.push(invoice_answer())
    extractor.extract(GS_DOC, INVOICE_PRESET, prompt="Amounts are in the summary box.")
    (req,) = fake.requests
    assert (req.project, req.location, req.model) == ("test-project", "europe-west1", MODEL)
    assert req.file_parts == [("gs://uploads/jobs/j1/files/f1/inv.pdf", "application/pdf")]
    assert req.inline_parts == []
    assert req.generation_config["responseMimeType"] == "application/json"
    schema = req.response_schema
    assert schema is not None and schema["required"] == ["columns", "results", "pages"]
    assert schema["properties"]["columns"]["items"]["enum"] == INVOICE_NAMES
    assert "null" in req.system_instruction and "YYYY-MM-DD" in req.system_instruction
    assert "Amounts are in the summary box." in req.user_text
    total = next(f for f in INVOICE_PRESET if f.name == "total")
    assert f"- total, number: {total.description}" in req.user_text
    assert {s["threshold"] for s in req.body["safetySettings"]} == {"BLOCK_ONLY_HIGH"}


def test_a_local_document_is_sent_inline(fake, blobs, clock) -> None:
    data = pdf_bytes(1)
    blobs.put_bytes("local://uploads/inv.pdf", data, content_type="application/pdf")
    fake.push(invoice_answer())
    make_extractor(fake, blobs, clock).extract(
        DocumentRef("local://uploads/inv.pdf", "inv.pdf", "application/pdf", len(data)), INVOICE_PRESET
    )
    (req,) = fake.requests
    assert req.file_parts == []
    assert req.inline_parts == [("application/pdf", data)]


def test_line_item_rows_keep_their_order_types_and_pages(fake, extractor) -> None:
    rows = [["F-1", "Widget", 2, 10.5], ["F-1", "Gadget", "3", "7.25"]]
    fake.push(answer({"columns": [f.name for f in LINE_ITEMS], "results": rows, "pages": [1, 2]}))
    ex = extractor.extract(GS_DOC, LINE_ITEMS)
    assert ex.results == [["F-1", "Widget", 2, 10.5], ["F-1", "Gadget", 3, 7.25]], "'3' and '7.25' coerced"
    assert ex.row_pages == [1, 2]


def test_columns_in_another_order_are_put_back_in_the_jobs_order(fake, extractor) -> None:
    cols = list(reversed(INVOICE_NAMES))
    fake.push(answer({"columns": cols, "results": [list(reversed(INVOICE_ROW))], "pages": [1]}))
    assert extractor.extract(GS_DOC, INVOICE_PRESET).results == [INVOICE_ROW]


# -- errors, classified for the retry policy ------------------------------------------------


@pytest.mark.parametrize(("retry_delay", "expected"), [("30s", 30.0), ("1.5s", 1.5)])
def test_a_429_with_retry_info_is_rate_limited_with_the_servers_delay(fake, extractor, retry_delay, expected) -> None:
    fake.push(rate_limited(retry_delay=retry_delay))
    err = extract_error(extractor)
    assert isinstance(err, RetryableError)
    assert err.kind is ErrorKind.RATE_LIMITED and err.retry_after == expected
    assert "429" in str(err)


def test_a_429_honours_the_retry_after_header(fake, extractor) -> None:
    fake.push(rate_limited(retry_after="12"))
    err = extract_error(extractor)
    assert isinstance(err, RetryableError) and err.retry_after == 12.0


def test_a_servers_delay_is_capped_at_300_seconds(fake, extractor) -> None:
    fake.push(rate_limited(retry_delay="3600s"))
    err = extract_error(extractor)
    assert isinstance(err, RetryableError) and err.retry_after == 300.0


def test_a_503_is_unavailable_with_the_servers_delay(fake, extractor) -> None:
    fake.push(unavailable(retry_after="20"))
    err = extract_error(extractor)
    assert isinstance(err, RetryableError)
    assert err.kind is ErrorKind.UNAVAILABLE and err.retry_after == 20.0


def test_a_500_is_a_server_error_without_delay(fake, extractor) -> None:
    fake.push(error(500, "Internal error encountered.", status_name="INTERNAL"))
    err = extract_error(extractor)
    assert isinstance(err, RetryableError)
    assert err.kind is ErrorKind.SERVER and err.retry_after is None


def test_the_client_does_not_retry_on_its_own(fake, extractor) -> None:
    fake.push(unavailable(), invoice_answer())
    extract_error(extractor)
    assert len(fake.requests) == 1 and fake.pending == 1


def test_a_400_is_permanent_with_the_servers_reason(fake, extractor) -> None:
    fake.push(error(400, "Unable to process input image. Please retry or report.", status_name="INVALID_ARGUMENT"))
    err = extract_error(extractor)
    assert type(err) is PermanentError and err.kind is ErrorKind.INVALID_INPUT
    assert "Unable to process input image" in str(err)


@pytest.mark.parametrize("status", [401, 403])
def test_refused_credentials_are_a_permanent_auth_error(fake, extractor, status) -> None:
    fake.push(error(status, "Permission denied on resource project.", status_name="PERMISSION_DENIED"))
    err = extract_error(extractor)
    assert type(err) is PermanentError and err.kind is ErrorKind.AUTH


def test_an_unreachable_server_is_a_network_error(gcs, clock) -> None:
    with FakeVertex() as gone:
        ex = make_extractor(gone, gcs, clock)
    # The fake is stopped: nothing listens on its port any more.
    err = extract_error(ex)
    assert isinstance(err, RetryableError) and err.kind is ErrorKind.NETWORK


def test_malformed_json_keeps_the_raw_text(fake, extractor) -> None:
    fake.push(answer('{"columns": ["invoice_number"], "results": [["F-1"'))
    err = extract_error(extractor)
    assert isinstance(err, MalformedModelOutput)
    assert err.raw_output == '{"columns": ["invoice_number"], "results": [["F-1"'


@pytest.mark.parametrize(
    ("payload", "why"),
    [
        ({"columns": INVOICE_NAMES[:-1], "results": [INVOICE_ROW[:-1]]}, "columns"),
        ({"columns": INVOICE_NAMES, "results": [INVOICE_ROW[:-1]]}, "5 values for 6 columns"),
        ({"columns": INVOICE_NAMES, "results": [["F-1", "10/05/2024", 1, "EUR", None, None]]}, "date"),
        ({"columns": INVOICE_NAMES, "results": [["F-1", None, "1.234,50", "EUR", None, None]]}, "not a number"),
        ({"columns": INVOICE_NAMES, "results": [["F-1", None, 1, "euros", None, None]]}, "currency"),
        ([INVOICE_ROW], "not an object"),
    ],
)
def test_an_answer_breaking_the_schema_is_malformed(fake, extractor, payload, why) -> None:
    fake.push(answer(payload))
    err = extract_error(extractor)
    assert isinstance(err, MalformedModelOutput) and why in str(err)
    assert json.loads(err.raw_output) == payload


def test_an_answer_cut_off_at_the_token_limit_is_malformed(fake, extractor) -> None:
    fake.push(answer('{"columns": [', finish_reason="MAX_TOKENS"))
    err = extract_error(extractor)
    assert isinstance(err, MalformedModelOutput) and "cut off" in str(err)


def test_a_safety_block_is_permanent(fake, extractor) -> None:
    fake.push(answer("", finish_reason="SAFETY"))
    err = extract_error(extractor)
    assert type(err) is PermanentError and err.code == "model_blocked"


# -- the shared rate limiter -------------------------------------------------------------


def store_limiter(tmp_path: Path, clock: ManualClock, *, rpm: int = 60, **kw: Any) -> StoreRateLimiter:
    store = SqliteStore(tmp_path / "state.db", durable=False)
    return StoreRateLimiter(
        store, clock, key=f"gemini:test-project:{MODEL}", config=BucketConfig.per_minute(rpm), max_wait_s=0, **kw
    )


def test_no_token_means_rate_limited_without_calling_the_model(fake, gcs, clock, tmp_path) -> None:
    limiter = store_limiter(tmp_path, clock, rpm=10)  # a burst of one
    ex = make_extractor(fake, gcs, clock, limiter=limiter)
    fake.push(invoice_answer())
    ex.extract(GS_DOC, INVOICE_PRESET)
    err = extract_error(ex)
    assert isinstance(err, RetryableError) and err.kind is ErrorKind.THROTTLED
    assert err.code == "rate_limited_locally"
    assert err.retry_after is not None and err.retry_after >= 60 / 9
    assert len(fake.requests) == 1


def test_a_429_slows_the_shared_bucket_for_every_instance(fake, gcs, clock, tmp_path) -> None:
    limiter = store_limiter(tmp_path, clock)
    other_instance = StoreRateLimiter(
        SqliteStore(tmp_path / "state.db", durable=False), clock, key=limiter.key, config=limiter.config, max_wait_s=0
    )
    ex = make_extractor(fake, gcs, clock, limiter=limiter)
    fake.push(rate_limited(retry_delay="30s"))
    extract_error(ex)
    decision = other_instance.try_take()
    assert not decision.allowed, "the bucket was emptied for everyone"
    assert decision.state.slow_until == pytest.approx(clock.now().timestamp() + 30)


def test_threads_sharing_a_stored_bucket_never_exceed_its_bound(tmp_path: Path) -> None:
    clock = ManualClock()
    cfg = BucketConfig(capacity=5, refill_per_s=2.0)
    path = tmp_path / "state.db"
    workers, steps, dt, tries = 6, 20, 0.5, 4
    grants: list[float] = []
    lock = threading.Lock()
    barrier = threading.Barrier(workers + 1, timeout=10)

    def worker() -> None:
        # Each thread stands for a function instance: its own limiter, one shared document.
        limiter = StoreRateLimiter(SqliteStore(path, durable=False), clock, key="k", config=cfg, max_wait_s=0)
        for _ in range(steps):
            barrier.wait()
            for _ in range(tries):
                if limiter.try_take().allowed:
                    with lock:
                        grants.append(clock.now().timestamp())
            barrier.wait()

    threads = [threading.Thread(target=worker) for _ in range(workers)]
    for t in threads:
        t.start()
    start = clock.now().timestamp()
    for _ in range(steps):
        barrier.wait()  # the threads race for tokens at this instant
        barrier.wait()
        clock.advance(dt)
    for t in threads:
        t.join(timeout=10)

    elapsed = (steps - 1) * dt
    assert len(grants) <= cfg.capacity + cfg.refill_per_s * elapsed
    assert len(grants) >= cfg.capacity + cfg.refill_per_s * elapsed - 1, "every token was handed out"
    for w_start in sorted(set(grants)):
        in_window = sum(1 for g in grants if w_start <= g <= w_start + 2.0)
        assert in_window <= cfg.capacity + cfg.refill_per_s * 2.0
    assert start <= min(grants)


# -- documents beyond the model's limits ---------------------------------------------------


def test_a_long_pdf_is_split_into_parts_and_merged_with_original_pages(fake, blobs, clock) -> None:
    data = pdf_bytes(5)
    uri = "local://uploads/jobs/j1/files/f1/long.pdf"
    blobs.put_bytes(uri, data, content_type="application/pdf")
    ex = make_extractor(fake, blobs, clock, max_pages=2)
    names = [f.name for f in LINE_ITEMS]

    def reply(req: RecordedRequest) -> Reply:
        # One row per page of the part, tagged with the part's page count.
        (_, part) = req.inline_parts[0]
        n = len(PdfReader(io.BytesIO(part)).pages)
        rows = [["F-1", f"item {len(fake.requests)}.{p}", 1, 1.0] for p in range(1, n + 1)]
        return answer({"columns": names, "results": rows, "pages": list(range(1, n + 1))}, input_tokens=100)

    fake.push(reply, reply, reply)
    result = ex.extract(DocumentRef(uri, "long.pdf", "application/pdf", len(data)), LINE_ITEMS)

    assert len(fake.requests) == 3
    assert [len(PdfReader(io.BytesIO(r.inline_parts[0][1])).pages) for r in fake.requests] == [2, 2, 1]
    assert [r[1] for r in result.results] == ["item 1.1", "item 1.2", "item 2.1", "item 2.2", "item 3.1"]
    assert result.row_pages == [1, 2, 3, 4, 5]
    assert result.pages == 5 and result.input_tokens == 300
    assert result.notes[0] == "split into 3 parts: pages 1-2 → part 1, pages 3-4 → part 2, pages 5-5 → part 3"
    stored = {b.name: b.generation for b in blobs.list("uploads", "jobs/j1/files/f1/long.pdf.parts/")}
    assert sorted(stored) == [
        f"jobs/j1/files/f1/long.pdf.parts/pages-{a:05d}-{b:05d}.pdf" for a, b in [(1, 2), (3, 4), (5, 5)]
    ]


def test_a_retried_split_reuses_the_parts_already_stored(fake, blobs, clock) -> None:
    data = pdf_bytes(4)
    uri = "local://uploads/long.pdf"
    blobs.put_bytes(uri, data, content_type="application/pdf")
    doc = DocumentRef(uri, "long.pdf", "application/pdf", len(data))
    ex = make_extractor(fake, blobs, clock, max_pages=2)
    fake.push(invoice_answer(), rate_limited())  # the second part fails: the task will be retried
    extract_error(ex, doc)
    before = {b.name: b.generation for b in blobs.list("uploads", "long.pdf.parts/")}
    fake.push(invoice_answer(), invoice_answer())
    assert len(ex.extract(doc, INVOICE_PRESET).results) == 2
    assert {b.name: b.generation for b in blobs.list("uploads", "long.pdf.parts/")} == before != {}


def test_a_pdf_over_the_byte_limit_is_split_by_size(fake, blobs, clock) -> None:
    data = pdf_bytes(4)
    uri = "local://uploads/big.pdf"
    blobs.put_bytes(uri, data, content_type="application/pdf")
    limit = len(pdf_bytes(2)) + 50  # two pages fit, four do not
    ex = make_extractor(fake, blobs, clock, max_bytes=limit)
    fake.push(*[invoice_answer(pages=[1]) for _ in range(2)])
    result = ex.extract(DocumentRef(uri, "big.pdf", "application/pdf", len(data)), INVOICE_PRESET)
    assert len(fake.requests) == 2
    assert result.row_pages == [1, 3]


def test_a_non_pdf_over_the_byte_limit_is_unreadable(fake, blobs, clock) -> None:
    blobs.put_bytes("local://uploads/scan.png", b"\x89PNG" + b"\0" * 100, content_type="image/png")
    ex = make_extractor(fake, blobs, clock, max_bytes=50)
    err = extract_error(ex, DocumentRef("local://uploads/scan.png", "scan.png", "image/png", 104))
    assert type(err).__name__ == "UnreadableDocument" and fake.requests == []


# -- through the whole pipeline ---------------------------------------------------------------


class LateExtractor:
    """Stands in for the Gemini extractor until the pipeline it needs (blobs,
    store, clock) exists: make_pipeline takes the extractor before building them."""

    name = "gemini"

    def __init__(self) -> None:
        self.inner: GeminiExtractor | None = None

    def extract(self, doc: DocumentRef, fields: Sequence[FieldSpec], *, prompt: str = "") -> DocumentExtraction:
        assert self.inner is not None
        return self.inner.extract(doc, fields, prompt=prompt)


@pytest.fixture
def pipeline(tmp_path: Path, fake: FakeVertex) -> Pipeline:
    late = LateExtractor()
    p = make_pipeline(tmp_path, extractor=late)
    limiter = StoreRateLimiter(
        p.deps.store, p.clock, key=f"gemini:test-project:{MODEL}", config=BucketConfig.per_minute(60), max_wait_s=0
    )
    late.inner = make_extractor(fake, p.deps.blobs, p.clock, limiter=limiter)
    return p


def run_one(p: Pipeline) -> Any:
    job = p.job()
    p.upload(job, "inv.pdf", pdf_bytes(1))
    run = p.start(job)
    p.drain(advance_clock=True)
    (task,) = p.tasks(run.id)
    return p.run(run.id), task


def test_pipeline_a_transient_429_is_retried_and_completes(pipeline, fake) -> None:
    fake.push(rate_limited(retry_delay="30s"), invoice_answer())
    start = pipeline.clock.now()
    run, task = run_one(pipeline)
    assert task.status is TaskStatus.COMPLETED and task.attempts == 2
    assert (pipeline.clock.now() - start).total_seconds() >= 30, "the server's delay was honoured"
    assert task.model == MODEL and task.model_version == "gemini-2.5-flash-001"
    assert task.prompt_version == PROMPT_VERSION and task.usage.input_tokens == 1200
    assert task.result is not None and task.result.results == [INVOICE_ROW]
    assert run.status is RunStatus.COMPLETED


def test_pipeline_a_persistent_429_fails_the_task_and_the_run_completes(pipeline, fake) -> None:
    fake.default = rate_limited(retry_delay="30s")
    run, task = run_one(pipeline)
    assert task.status is TaskStatus.FAILED and task.attempts == 6, "one attempt and five retries"
    assert task.error is not None and task.error["kind"] == "rate_limited" and "429" in task.error["message"]
    assert len(fake.requests) == 6, "every attempt reached the model: the penalty had refilled by then"
    assert run.status is RunStatus.COMPLETED and run.counters.failed == 1


def test_pipeline_a_malformed_answer_twice_then_a_good_one_completes(pipeline, fake) -> None:
    fake.push(answer("not json"), answer("still not json"), invoice_answer())
    run, task = run_one(pipeline)
    assert task.status is TaskStatus.COMPLETED and task.attempts == 3
    assert run.status is RunStatus.COMPLETED


def test_pipeline_a_malformed_answer_three_times_fails_with_the_raw_output(pipeline, fake) -> None:
    fake.push(answer("nope 1"), answer("nope 2"), answer("nope 3"))
    run, task = run_one(pipeline)
    assert task.status is TaskStatus.FAILED and task.attempts == 3
    assert task.raw_output == "nope 3"
    assert task.error is not None and task.error["kind"] == "malformed_output"
    assert run.status is RunStatus.COMPLETED


# -- cold start ---------------------------------------------------------------------------------


def test_importing_the_adapter_does_not_import_the_client_library() -> None:
    code = "import sys, common.adapters.gcp.gemini; print('google.genai' in sys.modules, 'pypdf' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_a_429_stamps_the_slowdown_of_the_leased_limiter_for_every_instance(fake, gcs, clock, tmp_path) -> None:
    plan = QuotaPlan.per_minute(600)
    path = tmp_path / "state.db"
    limiter = LeasedRateLimiter(SqliteStore(path, durable=False), clock, key="gemini:p:m", plan=plan, max_wait_s=0)
    other = LeasedRateLimiter(SqliteStore(path, durable=False), clock, key="gemini:p:m", plan=plan, max_wait_s=0)
    ex = make_extractor(fake, gcs, clock, limiter=limiter)
    fake.push(invoice_answer(), rate_limited(retry_delay="30s"))
    ex.extract(GS_DOC, INVOICE_PRESET)
    clock.advance(1)
    err = extract_error(ex)
    assert isinstance(err, RetryableError) and err.kind is ErrorKind.RATE_LIMITED
    with pytest.raises(RetryableError):
        other.acquire()  # every shard it asks is slowed: its first token is seconds away
    assert other.slow_until == pytest.approx(clock.now().timestamp() + 30)


def test_an_e_invoice_is_read_from_its_xml_without_calling_the_model(fake, blobs, clock) -> None:
    from tests.unit.extraction._pdfs import text_pdf
    from tests.unit.extraction.test_einvoice import UBL

    writer = PdfWriter()
    for page in PdfReader(io.BytesIO(text_pdf([[(50, 80, "Invoice No: WRONG-1", 11)]]))).pages:
        writer.add_page(page)
    writer.add_attachment("xrechnung.xml", UBL)
    buf = io.BytesIO()
    writer.write(buf)
    data = buf.getvalue()
    blobs.put_bytes("local://uploads/xr.pdf", data, content_type="application/pdf")
    ex = make_extractor(fake, blobs, clock).extract(
        DocumentRef("local://uploads/xr.pdf", "xr.pdf", "application/pdf", len(data)), INVOICE_PRESET
    )
    assert ex.method == "einvoice-xml"
    assert ex.results[0][:4] == ["XR-2024-17", "2024-05-02", 119.0, "EUR"]
    assert fake.requests == [], "no model call for an e-invoice"


def test_one_client_makes_more_than_a_hundred_calls_at_once(fake: FakeVertex, gcs: GcsBlobs) -> None:
    # The fake answers only when 120 calls wait on it together (or gives up after 10 s):
    # httpx's default pool of 100 connections would hold the rest back.
    calls = 120
    cond = threading.Condition()
    waiting = [0]
    most = [0]

    def gather(_req: RecordedRequest) -> Reply:
        with cond:
            waiting[0] += 1
            most[0] = max(most[0], waiting[0])
            cond.notify_all()
            cond.wait_for(lambda: most[0] >= calls, timeout=10)
            waiting[0] -= 1
        return invoice_answer()

    fake.default = gather
    ex = make_extractor(fake, gcs, ManualClock())
    results: list[object] = []
    threads = [
        threading.Thread(target=lambda: results.append(ex.extract(GS_DOC, INVOICE_PRESET))) for _ in range(calls)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert most[0] == calls, "every call reached the server before any was answered"
    assert len(results) == calls
