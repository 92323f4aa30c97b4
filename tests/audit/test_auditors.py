"""Each auditor's verdict on documents generated with exactly the property under test."""

from __future__ import annotations

import json
from typing import Any

import pytest

from common.audit.document import read_document
from common.audit.grammar import NEEDS_A_MODEL
from common.audit.grammar import SCHEMA as GRAMMAR_SCHEMA
from common.audit.logo import LogoUnreadable
from common.audit.report import AuditorResult, Finding, Severity, Status, merge
from common.audit.run import Inputs, run_auditor
from common.audit.settings import AuditSettings
from common.core.errors import MalformedModelOutput
from common.ports.textmodel import Generation
from tests.audit.generate import A4, A5, DISCLAIMER, Spec, build, landscape, logo_png

LOGO = logo_png()
ALL_PAGES = {"disclaimers": [{"text": DISCLAIMER, "pages": "all"}]}


def audit(auditor: str, spec: Spec, settings: dict[str, Any] | None = None, **inputs: Any) -> AuditorResult:
    inputs.setdefault("logo", LOGO)
    return run_auditor(auditor, "doc.pdf", build(spec), AuditSettings.model_validate(settings or {}), Inputs(**inputs))


def codes(result: AuditorResult) -> list[tuple[str, int | None]]:
    return [(f.code, f.page) for f in result.findings]


# -- disclaimer ---------------------------------------------------------------------------------------------


def test_a_disclaimer_printed_on_every_page_is_found_on_each_with_its_quote():
    result = audit("disclaimer", Spec(pages=3), ALL_PAGES)
    assert result.status is Status.PASSED
    assert codes(result) == [("disclaimer_found", 1), ("disclaimer_found", 2), ("disclaimer_found", 3)]
    for f in result.findings:
        assert f.score == 1.0 and (f.quote or "").startswith("this document is confidential")


def test_a_document_without_the_disclaimer_fails_with_it_missing():
    result = audit("disclaimer", Spec(disclaimer=None), {"disclaimers": [{"text": DISCLAIMER}]})
    assert result.status is Status.FAILED
    assert codes(result) == [("disclaimer_missing", None)]
    assert result.findings[0].severity is Severity.ERROR and result.findings[0].suggestion == DISCLAIMER


def test_a_disclaimer_required_on_every_page_but_printed_on_the_first_is_missing_on_the_others():
    result = audit("disclaimer", Spec(pages=3, disclaimer_pages=[1]), ALL_PAGES)
    assert result.status is Status.FAILED
    assert codes(result) == [("disclaimer_found", 1), ("disclaimer_missing", 2), ("disclaimer_missing", 3)]


def test_a_disclaimer_printed_with_a_typo_passes_with_a_warning_naming_the_difference():
    printed = DISCLAIMER.replace("unauthorised", "unauthorized").replace("solely", "soley")
    result = audit("disclaimer", Spec(disclaimer=printed, pages=1), ALL_PAGES)
    assert result.status is Status.PASSED
    [finding] = result.findings
    assert finding.code == "disclaimer_differs" and finding.severity is Severity.WARNING
    assert finding.score is not None and 0.85 <= finding.score < 1.0
    assert "soley" in (finding.quote or "")


def test_another_text_in_the_disclaimers_place_does_not_count():
    other = "Prices include VAT where applicable. Delivery within ten working days of the order date."
    result = audit("disclaimer", Spec(disclaimer=other, pages=1), ALL_PAGES)
    assert codes(result) == [("disclaimer_missing", 1)]


def test_each_configured_disclaimer_is_checked_on_its_own_pages():
    settings = {
        "disclaimers": [
            {"text": DISCLAIMER, "pages": "last"},
            {"text": "Registered in England under company number 01234567.", "pages": "first"},
        ]
    }
    result = audit("disclaimer", Spec(pages=2), settings)
    assert codes(result) == [("disclaimer_found", 2), ("disclaimer_missing", 1)]


# -- format -------------------------------------------------------------------------------------------------


def test_a_conforming_a4_document_has_no_format_findings():
    result = audit("format", Spec(logo=LOGO))
    assert result.status is Status.PASSED
    assert result.findings == []


def test_a5_pages_are_reported_as_the_wrong_size_on_every_page():
    result = audit("format", Spec(pagesize=A5, pages=2))
    assert [c for c in codes(result) if c[0] == "page_size"] == [("page_size", 1), ("page_size", 2)]
    assert result.findings[0].details["width_mm"] == pytest.approx(148.0, abs=0.2)
    assert "(A5)" in result.findings[0].message


def test_a_landscape_page_breaks_the_portrait_rule_but_not_the_size_rule():
    result = audit("format", Spec(pagesize=landscape(A4), pages=1))
    assert codes(result) == [("orientation", 1)]
    allowed = audit("format", Spec(pagesize=landscape(A4), pages=1), {"format": {"orientation": None}})
    assert allowed.findings == []


def test_standard_fonts_that_are_not_embedded_are_named_with_their_pages():
    result = audit("format", Spec(embed_fonts=False, pages=3))
    [finding] = [f for f in result.findings if f.code == "font_not_embedded"]
    assert finding.details == {"font": "Helvetica", "pages": [1, 2, 3]}
    assert audit("format", Spec(embed_fonts=False), {"format": {"embedded_fonts": False}}).findings == []


def test_an_image_printed_below_the_minimum_resolution_is_reported_with_its_dpi():
    result = audit("format", Spec(image_dpi=72))
    [finding] = result.findings
    assert finding.code == "image_resolution" and finding.page == 1
    assert finding.details["dpi"] == pytest.approx(72, abs=0.5)
    assert audit("format", Spec(image_dpi=300)).findings == []


def test_text_closer_to_the_edge_than_the_margin_rule_is_reported_with_the_measured_margin():
    result = audit("format", Spec(margin=5 * 72 / 25.4, pages=1, disclaimer=None))
    sides = {f.details["side"]: f.details["margin_mm"] for f in result.findings if f.code == "margin"}
    assert set(sides) == {"left"}
    assert sides["left"] == pytest.approx(5.0, abs=0.6)


# -- logo ---------------------------------------------------------------------------------------------------


def test_the_logo_is_found_where_it_was_printed_with_a_high_score():
    result = audit("logo", Spec(logo=LOGO), {"logo": {"region": "top-left"}})
    assert result.status is Status.PASSED
    [finding] = result.findings
    assert finding.code == "logo_found" and finding.page == 1
    assert finding.score is not None and finding.score > 0.9
    # Printed 120 x 60 pt at x = 20 mm, 15 mm below the top edge.
    assert finding.box is not None
    assert finding.box.x0 == pytest.approx(20 * 72 / 25.4, abs=4)
    assert finding.box.y0 == pytest.approx(15 * 72 / 25.4, abs=4)
    assert finding.box.x1 - finding.box.x0 == pytest.approx(120, rel=0.08)


def test_a_logo_printed_smaller_is_found_at_its_own_size():
    result = audit("logo", Spec(logo=LOGO, logo_width=70))
    [finding] = result.findings
    assert finding.code == "logo_found" and finding.box is not None
    assert finding.box.x1 - finding.box.x0 == pytest.approx(70, rel=0.1)


def test_a_moved_logo_fails_naming_where_it_is():
    result = audit("logo", Spec(logo=LOGO, logo_at="bottom-right"), {"logo": {"region": "top-left"}})
    assert result.status is Status.FAILED
    [finding] = result.findings
    assert finding.code == "logo_moved" and finding.details["region"] == "bottom-right"
    assert finding.score is not None and finding.score > 0.9


def test_a_missing_logo_fails_even_with_another_image_on_the_page():
    result = audit("logo", Spec(logo=None, distractor=True))
    [finding] = result.findings
    assert finding.code == "logo_missing" and finding.page == 1
    assert finding.score is not None and finding.score < 0.75


def test_the_logo_is_looked_for_on_each_required_page():
    result = audit("logo", Spec(logo=LOGO, pages=3, logo_pages=[1, 3]), {"logo": {"pages": "all"}})
    assert codes(result) == [("logo_found", 1), ("logo_missing", 2), ("logo_found", 3)]


def test_another_companys_logo_is_not_taken_for_the_reference():
    result = audit("logo", Spec(logo=logo_png(seed=3)))
    assert codes(result) == [("logo_missing", 1)]


def test_without_a_reference_logo_the_logo_auditor_is_skipped_and_an_unreadable_one_is_refused():
    skipped = audit("logo", Spec(), logo=None)
    assert skipped.status is Status.SKIPPED and "logo" in (skipped.reason or "")
    with pytest.raises(LogoUnreadable):
        audit("logo", Spec(), logo=b"not an image")


# -- grammar ------------------------------------------------------------------------------------------------


class Model:
    """A text model answering each page from a script (page number -> findings), in call order."""

    name = "fake"
    model = "fake-1"
    dependency = "fake"

    def __init__(self, answers: dict[int, Any]) -> None:
        self.answers = answers
        self.asked: list[int] = []

    def generate(self, prompt: str, schema: Any, *, system: str | None = None, **_: Any) -> Generation:
        page = 1 + len(self.asked)
        self.asked.append(page)
        assert schema == GRAMMAR_SCHEMA and system and "Page text" in prompt
        value = self.answers.get(page, {"findings": []})
        return Generation(value=value, raw=json.dumps(value), model=self.model)


def test_grammar_without_a_model_is_skipped_and_does_not_fail_the_report():
    results = [audit("grammar", Spec(), model=None), audit("format", Spec())]
    assert results[0].status is Status.SKIPPED and results[0].reason == NEEDS_A_MODEL
    assert merge(results)["verdict"] == "passed"


def test_grammar_findings_quote_the_page_and_made_up_quotes_are_dropped():
    answer = [
        {
            "quote": "Revenue grew in every region",
            "suggestion": "Revenue grew in all regions",
            "severity": "warning",
        },
        {"quote": "This sentence is not on the page", "suggestion": "x", "severity": "error"},
    ]
    model = Model({2: {"findings": answer}})
    result = audit("grammar", Spec(pages=2), model=model)
    assert model.asked == [1, 2]
    assert [(f.code, f.page, f.quote, f.suggestion) for f in result.findings] == [
        ("style", 2, "Revenue grew in every region", "Revenue grew in all regions")
    ]
    assert result.status is Status.PASSED  # style warnings only


def test_a_grammar_answer_without_a_list_of_findings_is_malformed_output():
    with pytest.raises(MalformedModelOutput):
        audit("grammar", Spec(pages=1), model=Model({1: ["not", "an", "object"]}))


def test_pages_already_read_are_not_sent_again():
    model = Model({})
    done: dict[int, list[Finding]] = {1: []}
    seen: list[int] = []
    run_auditor(
        "grammar",
        "doc.pdf",
        build(Spec(pages=3)),
        AuditSettings(),
        Inputs(model=model, grammar_done=done, on_grammar_page=lambda p, _: seen.append(p)),
    )
    assert len(model.asked) == 2 and seen == [2, 3]


# -- the document and the merged report ---------------------------------------------------------------------


def test_a_rotated_page_is_measured_as_displayed():
    import io

    import pypdf

    writer = pypdf.PdfWriter(clone_from=io.BytesIO(build(Spec(pages=1))))
    writer.pages[0].rotate(90)
    out = io.BytesIO()
    writer.write(out)
    [page] = read_document("r.pdf", out.getvalue()).pages
    assert page.width > page.height
    box = page.content_box()
    assert box is not None and 0 <= box.x0 < box.x1 <= page.width and 0 <= box.y0 < box.y1 <= page.height
    # Turned clockwise: the 20 mm left margin of the text is now the top margin.
    assert box.y0 == pytest.approx(20 * 72 / 25.4, abs=2)


def test_the_merged_report_counts_findings_per_auditor_page_and_severity():
    spec = Spec(pages=2, disclaimer_pages=[1], pagesize=A5, logo=LOGO)
    results = [audit(a, spec, ALL_PAGES) for a in ("logo", "disclaimer", "format")]
    report = merge(results)
    [doc] = report["documents"]
    assert report["verdict"] == doc["verdict"] == "failed"
    assert list(doc["auditors"]) == ["disclaimer", "format", "logo"]
    every = [f for r in results for f in r.findings]
    for severity in ("error", "warning", "info"):
        assert doc["by_severity"][severity] == sum(f.severity.value == severity for f in every)
    assert {f["code"] for f in doc["by_page"]["2"]} >= {"disclaimer_missing", "page_size"}
    assert doc["auditors"]["logo"]["status"] == "passed"
    assert merge(list(reversed(results))) == report


def test_grammar_through_the_openai_compatible_adapter_against_a_fake_server():
    from common.adapters.local.clock import ManualClock
    from common.adapters.openai_chat import OpenAIChatModel
    from tests.fakes.openai_chat import FakeOpenAI, chat_answer

    finding = {"quote": "Costs rose less", "suggestion": "Costs rose by less", "severity": "error", "explanation": "x"}
    with FakeOpenAI() as fake:
        fake.push(chat_answer({"findings": [finding]}), chat_answer({"findings": []}))
        model = OpenAIChatModel(base_url=fake.base_url, model="local-model", clock=ManualClock(), limiter=None)
        result = audit("grammar", Spec(pages=2), model=model)
        [first, second] = fake.requests
    assert first.schema == GRAMMAR_SCHEMA and "copy editor" in first.system_text
    assert "Costs rose less than planned" in first.user_text and "Language: en." in second.user_text
    assert result.status is Status.FAILED
    assert [(f.code, f.page, f.quote, f.suggestion) for f in result.findings] == [
        ("grammar", 1, "Costs rose less", "Costs rose by less")
    ]
