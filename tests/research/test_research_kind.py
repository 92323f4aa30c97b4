"""The ``research`` kind on the embedded backend: a collection ingested first, the OpenAI-compatible
adapter's real HTTP client, and a fake model server (tests/fakes/research_model.py) that counts its calls."""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pypdf
import pytest

from common import kinds
from common.core.errors import ConfigError, ErrorKind, PermanentError
from common.core.models import Job, Run, WorkItem
from common.core.research import ResearchSettings
from common.core.states import RunStatus, TaskStatus
from common.ports.store import Transaction
from common.service import collections as cols
from common.service import control, jobs, repo
from tests.fakes.openai_chat import ChatRequest, FakeOpenAI, Reply, chat_answer
from tests.fakes.research_model import ResearchModel
from tests.research import data
from tests.support import Pipeline, make_pipeline

QUESTION = "What does the handbook say about time off, expenses and travel?"


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as f:
        yield f


def _pipeline(tmp_path: Path, fake: FakeOpenAI | None) -> Pipeline:
    model = {} if fake is None else {"text_model": "openai", "openai_base_url": fake.base_url, "openai_model": "fake"}
    return make_pipeline(tmp_path, settings={**model, "openai_rpm": 100_000} if model else None)


def _collection(p: Pipeline) -> Any:
    coll = data.ingest(p.deps, p.sender, "alice")
    p.drain()
    return coll


def _job(p: Pipeline, collections: list[str], **kw: Any) -> Job:
    kind = kinds.get("research")
    assert kind.prepare is not None
    settings = kind.prepare(p.deps, "alice", ResearchSettings(question=QUESTION, collections=collections, **kw))
    return jobs.create_job(
        p.deps, owner="alice", name="research", fields=[], kind="research", kind_settings=settings.model_dump()
    )


def _research(tmp_path: Path, fake: FakeOpenAI, model: ResearchModel, **kw: Any) -> tuple[Pipeline, Run]:
    fake.default = model
    p = _pipeline(tmp_path, fake)
    _collection(p)
    run = p.start(_job(p, ["handbook"], **kw))
    return p, run


def _report(p: Pipeline, run: Run) -> str:
    files = {f["name"]: f for f in (p.run(run.id).outputs or {})["files"]}
    return p.deps.blobs.get_bytes(files["report.md"]["uri"]).decode()


# -- before the job exists --------------------------------------------------------------


def test_without_a_text_model_a_research_job_is_refused_before_it_exists(tmp_path: Path) -> None:
    p = _pipeline(tmp_path, None)
    _collection(p)
    with pytest.raises(ConfigError, match="no text model is configured"):
        _job(p, ["handbook"])


def test_a_collection_that_is_not_the_owners_is_refused_by_name_and_by_id(tmp_path: Path, fake: FakeOpenAI) -> None:
    p = _pipeline(tmp_path, fake)
    bobs = data.ingest(p.deps, p.sender, "bob", name="secret")
    for ref in ("nosuch", "secret", bobs.id):
        with pytest.raises(PermanentError) as err:
            _job(p, [ref])
        assert err.value.code == "unknown_collection" and repr(ref) in err.value.message


def test_collections_named_or_by_id_are_resolved_to_ids(tmp_path: Path, fake: FakeOpenAI) -> None:
    p = _pipeline(tmp_path, fake)
    coll = _collection(p)
    job = _job(p, ["handbook", coll.id])
    assert job.kind_settings is not None and job.kind_settings["collections"] == [coll.id]


# -- a run ------------------------------------------------------------------------------


def test_the_plan_makes_one_item_per_sub_question_once(tmp_path: Path, fake: FakeOpenAI) -> None:
    model = ResearchModel([*data.SUBQUESTIONS, data.VACATION.upper()], fail=())  # a repeat is dropped
    p, run = _research(tmp_path, fake, model)
    p.drain(advance_clock=True)

    done = p.run(run.id)
    assert model.plans == 1 and done.status is RunStatus.COMPLETED
    assert [d["params"]["subquestion"] for d in done.plan or []] == data.SUBQUESTIONS
    assert sorted(t.params["subquestion"] for t in p.tasks(run.id)) == sorted(data.SUBQUESTIONS)


def test_the_plan_is_cut_to_max_subquestions(tmp_path: Path, fake: FakeOpenAI) -> None:
    p, run = _research(tmp_path, fake, ResearchModel(data.SUBQUESTIONS), max_subquestions=2)
    p.drain(advance_clock=True)
    assert [t.params["subquestion"] for t in sorted(p.tasks(run.id), key=lambda t: t.file_id)] == data.SUBQUESTIONS[:2]


def test_each_answer_cites_the_chunk_retrieved_for_it_by_document_and_page(tmp_path: Path, fake: FakeOpenAI) -> None:
    model = ResearchModel(data.SUBQUESTIONS)
    p, run = _research(tmp_path, fake, model, k=3)
    p.drain(advance_clock=True)

    done = p.run(run.id)
    assert done.outputs is not None and done.outputs["answered"] == 3
    coll = cols.find_by_name(p.deps, "alice", "handbook")
    assert coll is not None
    for row in done.outputs["subquestions"]:
        question = row["subquestion"]
        (citation,) = row["citations"]
        retrieved = cols.search(p.deps, "alice", [coll.id], question, 3)
        # The chunk cited is the first one the model was shown, a chunk of the collection ...
        assert citation["chunk_id"] == retrieved[0].chunk_id and citation["collection_id"] == coll.id
        assert model.shown[question][0] == ("S1", citation["document"], citation["page"])
        # ... on the page where the answer is.
        assert (citation["document"], citation["page"]) == data.WHERE[question]
    assert model.twice() == []


def test_the_report_is_stored_as_markdown_and_pdf_with_its_sources(tmp_path: Path, fake: FakeOpenAI) -> None:
    p, run = _research(tmp_path, fake, ResearchModel(data.SUBQUESTIONS))
    p.drain(advance_clock=True)

    done = p.run(run.id)
    assert done.outputs is not None and done.outputs["title"] == "What the collection says"
    markdown = _report(p, run)
    assert markdown.startswith("# What the collection says\n") and f"**Question:** {QUESTION}" in markdown
    assert "## Sources\n\n1. handbook.pdf, page 2\n2. handbook.pdf, page 3\n3. travel.md, page 1\n" in markdown
    assert "Sub-questions that failed" not in markdown
    files = {f["name"]: f for f in done.outputs["files"]}
    assert files["report.pdf"]["content_type"] == "application/pdf"
    pdf = pypdf.PdfReader(io.BytesIO(p.deps.blobs.get_bytes(files["report.pdf"]["uri"])))
    text = " ".join(page.extract_text() for page in pdf.pages)
    assert "What the collection says" in text and "handbook.pdf, page 2" in text


def test_the_runs_cost_counts_the_plan_and_the_report_as_well_as_the_answers(tmp_path: Path, fake: FakeOpenAI) -> None:
    p, run = _research(tmp_path, fake, ResearchModel(data.SUBQUESTIONS))
    p.drain(advance_clock=True)

    done = p.run(run.id)
    assert done.status is RunStatus.COMPLETED and done.usage is not None
    # Every call the fake answered (1 plan + one per sub-question + 1 report) reports 300 in / 40 out.
    calls = len(fake.requests)
    assert calls == len(data.SUBQUESTIONS) + 2
    assert (done.usage.input_tokens, done.usage.output_tokens) == (300 * calls, 40 * calls)
    assert [s.step for s in done.step_usage] == ["plan", "finish"]


def test_a_failing_sub_question_is_retried_by_the_policy_then_reported_failed(tmp_path: Path, fake: FakeOpenAI) -> None:
    model = ResearchModel(data.SUBQUESTIONS, fail=[data.EXPENSES])
    p, run = _research(tmp_path, fake, model)
    p.drain(advance_clock=True)

    done = p.run(run.id)
    retries = p.deps.retry_policy.rules[ErrorKind.UNAVAILABLE].retries
    assert model.asked[data.EXPENSES] == retries + 1 and model.answers[data.EXPENSES] == 0
    assert done.status is RunStatus.COMPLETED and model.reports == 1
    assert (done.counters.completed, done.counters.failed) == (2, 1)
    assert done.outputs is not None and done.outputs["failed_subquestions"] == [data.EXPENSES]
    markdown = _report(p, run)
    assert f"## Sub-questions that failed\n\n- {data.EXPENSES} (" in markdown
    assert "could not be answered: " + data.EXPENSES in model.report_prompts[0]


def test_an_answer_citing_a_chunk_it_was_not_given_is_malformed_and_asked_again(
    tmp_path: Path, fake: FakeOpenAI
) -> None:
    model = ResearchModel(data.SUBQUESTIONS)
    bad = {"n": 0}

    def cite_a_stranger_once(sub: str) -> Reply | None:
        if sub != data.VACATION or bad["n"]:
            return None
        bad["n"] += 1
        return chat_answer({"answer": "27 days [S42].", "citations": ["S42"]})

    model.before_answer = cite_a_stranger_once
    p, run = _research(tmp_path, fake, model)
    p.drain(advance_clock=True)

    item = next(t for t in p.tasks(run.id) if t.params["subquestion"] == data.VACATION)
    assert item.status is TaskStatus.COMPLETED and item.attempts == 2
    assert item.history[0].error_code == "malformed_output" and "S42" in (item.history[0].error_message or "")
    assert model.asked[data.VACATION] == 2 and model.answers[data.VACATION] == 1


def test_cancel_mid_run_stops_the_remaining_sub_questions_and_writes_no_report(
    tmp_path: Path, fake: FakeOpenAI
) -> None:
    model = ResearchModel(data.SUBQUESTIONS)
    holder: dict[str, Any] = {}

    def cancel_at_the_first_answer(sub: str) -> Reply | None:
        if "cancelled" not in holder:
            holder["cancelled"] = control.cancel_run(holder["p"].deps, holder["run"].id, owner="alice")
        return None

    model.before_answer = cancel_at_the_first_answer
    fake.default = model
    p = _pipeline(tmp_path, fake)
    _collection(p)
    run = p.start(_job(p, ["handbook"]))
    holder.update(p=p, run=run)
    p.drain(advance_clock=True)

    done = p.run(run.id)
    assert done.status is RunStatus.CANCELLED
    assert sum(model.asked.values()) == 1, "no sub-question was asked after the cancel"
    # The one in flight at the cancel keeps its answer; the two not started never start.
    assert sorted(t.status.value for t in p.tasks(run.id)) == ["cancelled", "cancelled", "completed"]
    assert model.reports == 0 and done.finish_outputs is None


def test_sub_questions_are_answered_in_parallel(tmp_path: Path, fake: FakeOpenAI) -> None:
    model = ResearchModel(data.SUBQUESTIONS)
    together = threading.Barrier(3, timeout=20)
    met: list[bool] = []

    def wait_for_the_others(sub: str) -> Reply | None:
        try:
            together.wait()  # every answer call waits here until all three are in flight at once
            met.append(True)
        except threading.BrokenBarrierError:
            met.append(False)
        return None

    model.before_answer = wait_for_the_others
    p, run = _research(tmp_path, fake, model)
    p.drain(max_deliveries=1)  # the start: the plan is made
    p.runtime.start()  # the runtime's worker threads: the function's concurrency is 4
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and p.run(run.id).status is not RunStatus.COMPLETED:
            time.sleep(0.05)
    finally:
        p.runtime.stop()
    assert met == [True, True, True]
    assert p.run(run.id).status is RunStatus.COMPLETED and model.twice() == []


def test_progress_goes_by_phase(tmp_path: Path, fake: FakeOpenAI) -> None:
    model = ResearchModel(data.SUBQUESTIONS)
    phases: list[tuple[str | None, int, int]] = []
    holder: dict[str, Any] = {}

    def look(req: ChatRequest) -> Reply:
        run = holder["p"].run(holder["run"].id)
        done = sum(t.status is TaskStatus.COMPLETED for t in holder["p"].tasks(run.id))
        phases.append((run.phase, done, run.counters.total))
        return model(req)

    fake.default = look
    p = _pipeline(tmp_path, fake)
    _collection(p)
    run = p.start(_job(p, ["handbook"]))
    holder.update(p=p, run=run)
    p.drain(advance_clock=True)
    assert phases == [("planning", 0, 0), ("running", 0, 3), ("running", 1, 3), ("running", 2, 3), ("writing", 3, 3)]


def test_a_run_on_gemini_through_the_google_genai_client(tmp_path: Path) -> None:
    from google.oauth2.credentials import Credentials

    from common.adapters.gcp.gemini_text import GeminiTextModel
    from tests.fakes.vertex import FakeVertex

    model = ResearchModel(data.SUBQUESTIONS)
    with FakeVertex() as fake:
        fake.default = model.vertex
        p = _pipeline(tmp_path, None)
        # The composition root's Gemini, pointed at the fake Vertex endpoint.
        p.deps.named_text_model_factory = lambda name: GeminiTextModel(
            project="p",
            location="europe-west1",
            model=name or "gemini-2.5-flash",
            clock=p.clock,
            credentials=Credentials(token="test"),  # type: ignore[no-untyped-call]
            http_base_url=fake.base_url,
        )
        _collection(p)
        run = p.start(_job(p, ["handbook"]))
        p.drain(advance_clock=True)
        sent = [r.model for r in fake.requests]

    done = p.run(run.id)
    assert done.status is RunStatus.COMPLETED and done.outputs is not None and done.outputs["answered"] == 3
    assert sent == ["gemini-2.5-flash"] * 5  # the plan, three answers, the report
    assert model.plans == 1 and model.reports == 1 and model.twice() == []
    assert "1. handbook.pdf, page 2" in _report(p, run)


@pytest.mark.parametrize("message", ["item", "finish"])
def test_a_message_for_a_run_that_does_not_exist_is_dead_lettered_on_the_research_subscription(
    tmp_path: Path, message: str
) -> None:
    p = _pipeline(tmp_path, None)
    kind = kinds.get("research")
    if message == "item":
        p.sender.send(kind.item_type(task_id="task_gone", run_id="run_gone", job_id="job_gone"))
    else:
        assert kind.finish_type is not None
        p.sender.send(kind.finish_type(run_id="run_gone", job_id="job_gone"))
    p.drain()
    [letter] = p.bus.dead_letters()
    assert letter.subscription.endswith("research")
    assert "gone" in (letter.last_error or "")


def test_an_item_whose_earlier_attempt_saved_its_answer_completes_from_it_without_asking(
    tmp_path: Path, fake: FakeOpenAI
) -> None:
    model = ResearchModel(data.SUBQUESTIONS)
    p, run = _research(tmp_path, fake, model)
    p.drain(max_deliveries=1)  # the start: the plan and the items
    item = next(t for t in p.tasks(run.id) if t.params["subquestion"] == data.VACATION)
    saved = {
        "answer": {"subquestion": data.VACATION, "answer": "Saved before the worker died.", "citations": []},
        "usage": {"input_tokens": 7, "output_tokens": 3},
        "model": "fake",
    }

    def died_after_saving(t: Transaction) -> None:  # what an attempt killed after its checkpoint leaves
        repo.tx_put(t, repo.tx_require(t, WorkItem, item.id).model_copy(update={"checkpoint": saved}))

    p.deps.store.transaction(died_after_saving)
    p.drain(advance_clock=True)

    assert model.asked[data.VACATION] == 0 and model.asked[data.EXPENSES] == 1
    done = p.run(run.id)
    row = next(r for r in (done.outputs or {})["subquestions"] if r["subquestion"] == data.VACATION)
    assert row["answer"] == "Saved before the worker died." and row["status"] == "completed"
    finished = next(t for t in p.tasks(run.id) if t.id == item.id)
    assert finished.usage is not None and finished.usage.input_tokens == 7
