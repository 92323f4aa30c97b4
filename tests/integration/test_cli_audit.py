"""``sluice audit`` end to end on the embedded backend, on documents the test generates."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from common.cli import main
from tests.audit.generate import A5, DISCLAIMER, Spec, build, logo_png


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    logo = logo_png()
    out = {
        "good": tmp_path / "good.pdf",
        "bad": tmp_path / "bad.pdf",
        "logo": tmp_path / "logo.png",
    }
    out["good"].write_bytes(build(Spec(logo=logo)))
    out["bad"].write_bytes(build(Spec(logo=None, pagesize=A5, disclaimer=None)))
    out["logo"].write_bytes(logo)
    return out


def _audit(tmp_path: Path, *paths: Path, extra: tuple[str, ...] = ()) -> list[str]:
    return [
        "audit",
        *map(str, paths),
        "--disclaimer",
        DISCLAIMER,
        "--data-dir",
        str(tmp_path / "data"),
        "--json",
        "--quiet",
        *extra,
    ]


def test_sluice_audit_reports_each_documents_verdict_and_exits_1_on_findings(
    tmp_path: Path, files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    args = _audit(tmp_path, files["good"], files["bad"], extra=("--logo", str(files["logo"])))
    assert main(args) == 1
    report = json.loads(capsys.readouterr().out)
    verdicts = {d["document"]: d["verdict"] for d in report["documents"]}
    assert verdicts == {"good.pdf": "passed", "bad.pdf": "failed"}
    bad = next(d for d in report["documents"] if d["document"] == "bad.pdf")["auditors"]
    assert [f["code"] for f in bad["logo"]["findings"]] == ["logo_missing"]
    assert [f["code"] for f in bad["disclaimer"]["findings"]] == ["disclaimer_missing"]
    assert {f["code"] for f in bad["format"]["findings"]} == {"page_size"}
    assert bad["grammar"]["status"] == "skipped"

    # The same command again prints the finished audit without auditing again (the per-auditor
    # timings in the report would differ had it run again).
    assert main(args) == 1
    assert json.loads(capsys.readouterr().out) == report


def test_a_passing_audit_exits_0_and_without_a_logo_the_logo_auditor_is_not_run(
    tmp_path: Path, files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(_audit(tmp_path, files["good"])) == 0
    [doc] = json.loads(capsys.readouterr().out)["documents"]
    assert sorted(doc["auditors"]) == ["disclaimer", "format", "grammar"]


def test_asking_for_the_logo_auditor_without_a_logo_is_a_usage_error(tmp_path: Path, files: dict[str, Path]) -> None:
    assert main(_audit(tmp_path, files["good"], extra=("--auditors", "logo"))) == 2


def test_a_text_model_configured_without_its_server_is_one_error_line_before_any_work(
    tmp_path: Path, files: dict[str, Path], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SLUICE_TEXT_MODEL", "openai")
    monkeypatch.delenv("SLUICE_OPENAI_BASE_URL", raising=False)
    assert main(_audit(tmp_path, files["good"])) == 2
    assert "SLUICE_OPENAI_BASE_URL" in capsys.readouterr().err
