"""The ``sluice`` CLI tells the truth: exit codes, failures, names, duplicates, every command.

Real processes with the real offline extractor on the bundled sample invoices,
read the way a user reads them: the terminal and the files in ``--out``.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import tomllib
from email.message import EmailMessage
from pathlib import Path

import pytest

from tests.integration.test_cli import read_csv, sluice
from tests.support import REPO_ROOT, SAMPLES

pytestmark = pytest.mark.slow

CLI = (sys.executable, "-m", "common.cli")
BROKEN_PDF = b"%PDF-1.7\n1 0 obj << /Type /Catalog"


def sluice_env(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "common.cli", *args],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT), **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def samples() -> list[Path]:
    return sorted(SAMPLES.glob("*.pdf"))


def expected_numbers() -> dict[str, str]:
    """Sample file name -> its invoice number."""
    expected = json.loads((SAMPLES / "expected.json").read_text())
    return {name: fields["invoice_number"] for name, fields in expected.items()}


# -- 9: exit status, configuration first, failures once ---------------------------------------------


def test_help_documents_the_exit_codes(tmp_path: Path) -> None:
    for args in (["--help"], ["run", "--help"]):
        res = sluice(*args, cwd=tmp_path)
        assert res.returncode == 0
        codes = {line.split()[0] for line in res.stdout.split("exit status:")[1].splitlines() if line.strip()}
        assert codes == {"0", "1", "2", "3", "4", "130"}
        assert "some documents failed" in res.stdout


def test_gemini_without_a_project_is_one_line_and_exit_2_before_any_work(tmp_path: Path) -> None:
    env = {"SLUICE_EXTRACTOR": "gemini", "SLUICE_PROJECT": ""}
    res = sluice_env("run", str(SAMPLES), "--format", "csv", "--out", "out", cwd=tmp_path, env=env)
    assert res.returncode == 2
    assert res.stderr.splitlines() == [
        "sluice: error: the gemini extractor needs SLUICE_PROJECT"
        " (Set SLUICE_PROJECT to the project that runs Vertex AI.)"
    ]
    assert not (tmp_path / "out").exists()
    jobs = sluice("jobs", "--json", cwd=tmp_path)
    assert (jobs.returncode, jobs.stdout) == (0, ""), "no job was created"


def test_an_invalid_sluice_variable_is_one_line_and_exit_2(tmp_path: Path) -> None:
    res = sluice_env("run", str(SAMPLES), cwd=tmp_path, env={"SLUICE_EXTRACTOR": "gpt"})
    assert res.returncode == 2
    assert res.stderr.splitlines() == [
        "sluice: error: SLUICE_EXTRACTOR: Input should be 'offline' or 'gemini' (Fix or unset SLUICE_EXTRACTOR.)"
    ]


def _docs_with_two_broken(tmp_path: Path) -> Path:
    docs = tmp_path / "docs"
    (docs / "sub").mkdir(parents=True)
    shutil.copy(SAMPLES / "uk_invoice.pdf", docs / "good.pdf")
    (docs / "broken.pdf").write_bytes(BROKEN_PDF)
    (docs / "sub" / "cut.pdf").write_bytes(BROKEN_PDF + b"\n% another")
    return docs


def test_each_failed_file_is_printed_once_with_reason_and_hint_not_as_log_lines(tmp_path: Path) -> None:
    _docs_with_two_broken(tmp_path)
    res = sluice("run", "docs", "--format", "csv", "--out", "out", cwd=tmp_path)
    assert res.returncode == 1, res.stderr
    failed = [line for line in res.stderr.splitlines() if line.startswith("sluice: failed: ")]
    assert failed == [
        "sluice: failed: broken.pdf: The PDF is truncated or corrupt (no %%EOF end marker)."
        " (hint: The upload may have been cut off; upload a complete copy.)",
        "sluice: failed: sub/cut.pdf: The PDF is truncated or corrupt (no %%EOF end marker)."
        " (hint: The upload may have been cut off; upload a complete copy.)",
    ]
    assert "WARNING" not in res.stderr and "task_id" not in res.stderr
    assert res.stderr.splitlines()[-1] == "sluice: 2 of 3 files failed", "no Failures sheet without an XLSX"
    assert len(read_csv(tmp_path / "out" / "docs-run1.csv")) == 1, "the outputs are still written"


def test_the_failures_sheet_is_named_when_there_is_one(tmp_path: Path) -> None:
    _docs_with_two_broken(tmp_path)
    res = sluice("run", "docs", "--format", "xlsx", "--out", "out", cwd=tmp_path)
    assert res.returncode == 1
    assert res.stderr.splitlines()[-1] == "sluice: 2 of 3 files failed; see the Failures sheet in out/docs-run1.xlsx"


def test_a_run_where_every_document_succeeds_exits_0_and_names_no_failures(tmp_path: Path) -> None:
    res = sluice("run", str(SAMPLES / "uk_invoice.pdf"), "--format", "csv", "--out", "out", "--quiet", cwd=tmp_path)
    assert res.returncode == 0
    assert res.stderr == ""
    assert res.stdout.splitlines()[-1] == "1 file: 1 extracted, 0 failed"


def test_a_data_dir_in_use_is_one_line_and_exit_4(tmp_path: Path) -> None:
    (tmp_path / ".sluice").mkdir()
    with open(tmp_path / ".sluice" / "lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        res = sluice("run", str(SAMPLES), cwd=tmp_path)
    assert res.returncode == 4
    assert res.stderr.splitlines() == [
        "sluice: error: another sluice process is using .sluice; wait for it, or pass another --data-dir"
    ]


# -- 10: nothing is lost silently --------------------------------------------------------------------

# 18 files, 6 distinct contents, nested; a/x.pdf and b/x.pdf differ.
LAYOUT = {
    "a/x.pdf": 0,
    "b/x.pdf": 1,
    "a/deep/copy-of-x.pdf": 0,
    "c/x.pdf": 0,
    "b/inner/x.pdf": 1,
    "b/y.pdf": 1,
    "c/d/e/two.pdf": 2,
    "two.pdf": 2,
    "a/two.pdf": 2,
    "three.pdf": 3,
    "d/three.pdf": 3,
    "d/e/three.pdf": 3,
    "four.pdf": 4,
    "e/four.pdf": 4,
    "e/f/four.pdf": 4,
    "five.pdf": 5,
    "f/five.pdf": 5,
    "f/g/h/five.pdf": 5,
}


def test_18_files_of_6_contents_give_18_rows_with_relative_names_and_duplicate_of(tmp_path: Path) -> None:
    sources = samples()
    for rel, i in LAYOUT.items():
        (tmp_path / "docs" / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(sources[i], tmp_path / "docs" / rel)
    res = sluice("run", "docs", "--format", "csv", "--format", "xlsx", "--out", "out", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    rows = read_csv(tmp_path / "out" / "docs-run1.csv")
    assert sorted(r["source_file"] for r in rows) == sorted(LAYOUT), "every input file has its row, by relative path"
    numbers = expected_numbers()
    by_name = {r["source_file"]: r for r in rows}
    for rel, i in LAYOUT.items():
        assert by_name[rel]["invoice_number"] == numbers[sources[i].name], rel
    assert by_name["a/x.pdf"]["invoice_number"] != by_name["b/x.pdf"]["invoice_number"]
    read = [r for r in rows if not r["duplicate_of"]]
    assert len(read) == 6, "each distinct content is read once"
    for r in rows:
        if r["duplicate_of"]:
            original = by_name[r["duplicate_of"]]
            assert LAYOUT[original["source_file"]] == LAYOUT[r["source_file"]], "duplicate_of names identical bytes"
            assert not original["duplicate_of"]
    assert "18 files: 18 extracted, 0 failed; 12 byte-identical to another file" in res.stdout
    assert "12 are byte-identical to another file and are read once" in res.stderr
    assert "(18 rows)" in res.stdout


def test_two_folders_with_the_same_file_name_are_told_apart(tmp_path: Path) -> None:
    for folder, sample in (("one", "uk_invoice.pdf"), ("two", "de_rechnung.pdf")):
        (tmp_path / folder).mkdir()
        shutil.copy(SAMPLES / sample, tmp_path / folder / "x.pdf")
    res = sluice("run", "one", "two", "--format", "csv", "--out", "out", "--quiet", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    rows = read_csv(tmp_path / "out" / "one_and_1_more-run1.csv")
    assert sorted(r["source_file"] for r in rows) == ["one/x.pdf", "two/x.pdf"]


def _one_job_folder(root: Path, name: str, samples_in_it: list[str]) -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    for s in samples_in_it:
        shutil.copy(SAMPLES / s, folder / s)
    return folder


def test_two_jobs_with_the_same_name_never_replace_each_others_export(tmp_path: Path) -> None:
    big = _one_job_folder(tmp_path / "q1", "invoices", ["uk_invoice.pdf", "de_rechnung.pdf", "fr_facture.pdf"])
    small = _one_job_folder(tmp_path / "q2", "invoices", ["us_saas_invoice.pdf"])
    first = sluice("run", str(big), "--format", "csv", "--out", "out", "--quiet", cwd=tmp_path)
    second = sluice("run", str(small), "--format", "csv", "--out", "out", "--quiet", cwd=tmp_path)
    assert (first.returncode, second.returncode) == (0, 0), second.stderr
    assert len(read_csv(tmp_path / "out" / "invoices-run1.csv")) == 3, "the first job's file is intact"
    (other,) = [p for p in (tmp_path / "out").glob("*.csv") if p.name != "invoices-run1.csv"]
    assert other.name.startswith("invoices-job_") and other.name.endswith("-run1.csv")
    assert [r["source_file"] for r in read_csv(other)] == ["us_saas_invoice.pdf"]
    assert second.stdout.splitlines()[0] == f"out/{other.name}  (1 row)"


def test_two_data_dirs_never_replace_each_others_export_and_a_run_delivered_again_keeps_its_name(
    tmp_path: Path,
) -> None:
    big = _one_job_folder(tmp_path, "invoices", ["uk_invoice.pdf", "de_rechnung.pdf"])
    args = ("run", str(big), "--format", "csv", "--out", "out", "--quiet")
    assert sluice(*args, "--data-dir", "d1", cwd=tmp_path).returncode == 0
    (big / "de_rechnung.pdf").unlink()  # the other data dir sees other contents
    assert sluice(*args, "--data-dir", "d2", cwd=tmp_path).returncode == 0
    again = sluice(*args, "--data-dir", "d2", cwd=tmp_path)
    assert again.returncode == 0
    files = sorted(p.name for p in (tmp_path / "out").glob("*.csv"))
    assert len(files) == 2, files
    assert len(read_csv(tmp_path / "out" / "invoices-run1.csv")) == 2, "d1's export is intact"
    (d2_file,) = [f for f in files if f != "invoices-run1.csv"]
    assert len(read_csv(tmp_path / "out" / d2_file)) == 1
    assert again.stdout.splitlines()[0] == f"out/{d2_file}  (1 row)", "delivering a run again reuses its own name"


def test_a_file_sluice_did_not_write_is_never_replaced(tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "uk_invoice-run1.csv").write_text("my own notes\n")
    res = sluice("run", str(SAMPLES / "uk_invoice.pdf"), "--format", "csv", "--out", "out", "--quiet", cwd=tmp_path)
    assert res.returncode == 0
    assert (tmp_path / "out" / "uk_invoice-run1.csv").read_text() == "my own notes\n"
    assert len(list((tmp_path / "out").glob("uk_invoice-job_*-run1.csv"))) == 1


def quiet_in(i: int) -> list[str]:
    return ["--quiet", "--data-dir", f"d{i}"]


def test_concurrent_runs_from_three_data_dirs_into_one_out_dir_each_keep_their_file(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    procs = [
        subprocess.Popen(
            [*CLI, "run", str(SAMPLES / name), "--name", "same", "--format", "csv", "--out", "out", *quiet_in(i)],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i, name in enumerate(["uk_invoice.pdf", "de_rechnung.pdf", "us_saas_invoice.pdf"])
    ]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], outs
    numbers = sorted(r["invoice_number"] for f in (tmp_path / "out").glob("*.csv") for r in read_csv(f))
    want = expected_numbers()
    assert numbers == sorted(want[n] for n in ["uk_invoice.pdf", "de_rechnung.pdf", "us_saas_invoice.pdf"])


# -- 11: every command -------------------------------------------------------------------------------


def test_version_is_the_packages(tmp_path: Path) -> None:
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    res = sluice("--version", cwd=tmp_path)
    assert res.returncode == 0
    assert res.stdout.strip() == f"sluice {project['version']}"


def _eml_with(path: Path, *attachments: Path) -> Path:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = "a@example.com", "b@example.com", "invoices"
    msg.set_content("see attached")
    for a in attachments:
        msg.add_attachment(a.read_bytes(), maintype="application", subtype="pdf", filename=a.name)
    path.write_bytes(msg.as_bytes())
    return path


def test_a_job_filled_by_import_eml_is_listed_and_run_from_the_cli(tmp_path: Path) -> None:
    eml = _eml_with(tmp_path / "mail.eml", SAMPLES / "uk_invoice.pdf", SAMPLES / "de_rechnung.pdf")
    imported = sluice("import-eml", str(eml), "--quiet", cwd=tmp_path)
    assert imported.returncode == 0, imported.stderr
    listed = sluice("jobs", "--json", cwd=tmp_path)
    (job,) = [json.loads(line) for line in listed.stdout.splitlines()]
    assert (job["name"], job["files"], job["runs"], job["last_run"]) == ("mail.eml", 2, 0, None)

    ran = sluice("run", "--job", job["job"], "--format", "csv", "--out", "out", "--quiet", cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr
    (csv_file,) = (tmp_path / "out").glob("*.csv")
    assert csv_file.name == "mail.eml-run1.csv"
    assert sorted(r["source_file"] for r in read_csv(csv_file)) == ["de_rechnung.pdf", "uk_invoice.pdf"]

    runs = sluice("runs", job["job"], "--json", cwd=tmp_path)
    (run,) = [json.loads(line) for line in runs.stdout.splitlines()]
    assert (run["job"], run["number"], run["status"]) == (job["job"], 1, "completed")
    table = sluice("runs", cwd=tmp_path)
    assert table.stdout.splitlines()[0].split()[:4] == ["RUN", "JOB", "NUMBER", "STATUS"]
    assert run["run"] in table.stdout


def test_run_and_runs_refuse_an_unknown_job_in_one_line(tmp_path: Path) -> None:
    assert sluice("run", str(SAMPLES / "uk_invoice.pdf"), "--quiet", cwd=tmp_path).returncode == 0
    for args in (("run", "--job", "job_nope"), ("runs", "job_nope")):
        res = sluice(*args, cwd=tmp_path)
        assert res.returncode == 2
        assert res.stderr.splitlines() == [
            "sluice: error: job job_nope not found (sluice jobs lists the jobs in this data directory.)"
        ]


def _dead_letter_a_start_run(data_dir: Path) -> str:
    """A new run of the data dir's job whose StartRun message is dead-lettered (as after a bad deploy)."""
    from common.adapters.local.sqlite_bus import Settlement
    from common.bootstrap import bootstrap, local_bus
    from common.config import Settings
    from common.core.models import Job
    from common.runtime.local import LocalRuntime
    from common.service import jobs, repo
    from common.service.context import TopologySender

    deps = bootstrap(Settings(backend="local", data_dir=data_dir))
    bus = local_bus(deps)
    (job,) = list(repo.scan(deps.store, Job))
    run = jobs.request_run(deps, TopologySender(deps.topology, deps.settings, bus, deps.clock), job)
    for sub in LocalRuntime(deps, bus).subscriptions:
        for d in bus.pull(sub, 10):
            bus.settle([Settlement(d, ack=True, dead_letter=True, error="handler crashed: boom")])
    return run.id


def test_dead_letters_are_listed_and_a_replay_processes_the_message(tmp_path: Path) -> None:
    assert sluice("run", str(SAMPLES / "uk_invoice.pdf"), "--format", "csv", "--quiet", cwd=tmp_path).returncode == 0
    run_id = _dead_letter_a_start_run(tmp_path / ".sluice")
    listed = sluice("dead-letters", "--json", cwd=tmp_path)
    (letter,) = [json.loads(line) for line in listed.stdout.splitlines()]
    assert (letter["kind"], letter["error"]) == ("run.start", "handler crashed: boom")

    replayed = sluice("dead-letters", "--replay", str(letter["seq"]), cwd=tmp_path)
    assert replayed.returncode == 0, replayed.stderr
    assert replayed.stdout.strip().endswith("and processed")
    runs = [json.loads(line) for line in sluice("runs", "--json", cwd=tmp_path).stdout.splitlines()]
    assert {r["run"]: r["status"] for r in runs}[run_id] == "completed"
    assert sluice("dead-letters", cwd=tmp_path).stdout.strip() == "no dead letters"
    assert str(letter["seq"]) in sluice("dead-letters", "--all", cwd=tmp_path).stdout


def test_replaying_an_unknown_dead_letter_is_a_usage_error(tmp_path: Path) -> None:
    assert sluice("run", str(SAMPLES / "uk_invoice.pdf"), "--quiet", cwd=tmp_path).returncode == 0
    res = sluice("dead-letters", "--replay", "99", cwd=tmp_path)
    assert res.returncode == 2
    assert res.stderr.splitlines() == ["sluice: error: dead letter 99 not found (sluice dead-letters lists them.)"]


def test_listing_a_data_dir_that_does_not_exist_says_so(tmp_path: Path) -> None:
    res = sluice("jobs", "--data-dir", "nowhere", cwd=tmp_path)
    assert res.returncode == 2
    assert "no sluice data in nowhere" in res.stderr
    assert not (tmp_path / "nowhere").exists()


def test_log_level_lists_its_choices_and_refuses_others(tmp_path: Path) -> None:
    helped = sluice("run", "--help", cwd=tmp_path)
    assert "--log-level {DEBUG,INFO,WARNING,ERROR}" in helped.stdout
    res = sluice("run", str(SAMPLES), "--log-level", "LOUD", cwd=tmp_path)
    assert res.returncode == 2
    assert "invalid choice: 'LOUD'" in res.stderr


def test_sluice_serve_uses_sluice_data_dir(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "SLUICE_DATA_DIR": str(tmp_path / "from-env")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "common.cli", "serve", "--port", "0", "--dev-identity", "me"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert f"(data in {tmp_path / 'from-env'})" in line, line
        assert (tmp_path / "from-env" / "state.db").exists()
        assert not (tmp_path / ".sluice").exists()
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
    assert proc.returncode == 0


def test_fields_warns_about_names_without_a_strategy(tmp_path: Path) -> None:
    res = sluice("run", str(SAMPLES / "uk_invoice.pdf"), "--fields", "total,po_ref", "--format", "csv", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    (warning,) = [line for line in res.stderr.splitlines() if "warning" in line]
    assert warning.startswith("sluice: warning: field 'po_ref' is not a known field:")


def test_an_invalid_field_name_is_one_usage_error_line(tmp_path: Path) -> None:
    res = sluice("run", str(SAMPLES), "--fields", "total,Invoice No", cwd=tmp_path)
    assert res.returncode == 2
    assert res.stderr.splitlines() == [
        "sluice: error: --fields: field name 'Invoice No' must be snake_case:"
        " a lowercase letter, then letters, digits or _"
    ]


def test_items_lists_a_runs_work_items_and_runs_and_jobs_filter_by_kind(tmp_path: Path) -> None:
    docs = samples()[:2]
    assert sluice("run", *map(str, docs), "--quiet", cwd=tmp_path).returncode == 0
    (job,) = [json.loads(line) for line in sluice("jobs", "--json", cwd=tmp_path).stdout.splitlines()]
    assert job["kind"] == "extract"
    (run,) = [
        json.loads(line) for line in sluice("runs", "--json", "--kind", "extract", cwd=tmp_path).stdout.splitlines()
    ]
    assert (run["kind"], run["items"]) == ("extract", f"{len(docs)} ok, 0 failed, {len(docs)} total")
    assert sluice("runs", "--json", "--kind", "enrich", cwd=tmp_path).stdout == ""
    assert sluice("jobs", "--kind", "enrich", cwd=tmp_path).stdout.startswith("no jobs yet")

    listed = sluice("items", run["run"], "--json", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    items = [json.loads(line) for line in listed.stdout.splitlines()]
    assert sorted(i["name"] for i in items) == sorted(d.name for d in docs)
    assert {(i["status"], i["attempts"]) for i in items} == {("completed", 1)}
    assert sluice("items", run["run"], "--status", "failed", cwd=tmp_path).stdout.strip() == "no failed items"
    table = sluice("items", run["run"], cwd=tmp_path).stdout.splitlines()
    assert table[0].split()[:4] == ["ITEM", "NAME", "STATUS", "ATTEMPTS"] and len(table) == 1 + len(docs)

    res = sluice("items", "run_nope", cwd=tmp_path)
    assert res.returncode == 2
    assert res.stderr.splitlines() == [
        "sluice: error: run run_nope not found (sluice runs lists the runs in this data directory.)"
    ]
