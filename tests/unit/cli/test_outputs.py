"""Delivering exports into a shared ``--out`` folder: a name is only ever reused by the run that wrote it."""

from __future__ import annotations

import io
import json
import threading
from pathlib import Path

from common.cli_outputs import MANIFEST, Writer, candidates, deliver, read_manifest

A = Writer(data_dir="/data/one", job_id="job_a", run_id="run_a")
B = Writer(data_dir="/data/two", job_id="job_b", run_id="run_b")


def put(out: Path, writer: Writer, content: bytes, stem: str = "invoices") -> Path:
    return deliver(out, candidates(stem, writer.job_id, 1, "csv"), writer, io.BytesIO(content), fmt="csv")


def test_the_first_writer_gets_the_job_and_run_name(tmp_path: Path) -> None:
    assert put(tmp_path, A, b"a").name == "invoices-run1.csv"


def test_another_writer_gets_a_name_with_its_job_id_and_the_first_file_is_kept(tmp_path: Path) -> None:
    put(tmp_path, A, b"a")
    assert put(tmp_path, B, b"b").name == "invoices-job_b-run1.csv"
    assert (tmp_path / "invoices-run1.csv").read_bytes() == b"a"


def test_the_same_run_delivered_again_replaces_its_own_file(tmp_path: Path) -> None:
    put(tmp_path, A, b"old")
    assert put(tmp_path, A, b"new").name == "invoices-run1.csv"
    assert (tmp_path / "invoices-run1.csv").read_bytes() == b"new"
    assert sorted(p.name for p in tmp_path.iterdir()) == [MANIFEST, "invoices-run1.csv"]


def test_a_file_nobody_registered_is_never_replaced(tmp_path: Path) -> None:
    (tmp_path / "invoices-run1.csv").write_bytes(b"mine")
    assert put(tmp_path, A, b"a").name == "invoices-job_a-run1.csv"
    assert (tmp_path / "invoices-run1.csv").read_bytes() == b"mine"


def test_when_even_the_job_id_name_is_taken_a_number_is_added(tmp_path: Path) -> None:
    (tmp_path / "invoices-run1.csv").write_bytes(b"x")
    (tmp_path / "invoices-job_a-run1.csv").write_bytes(b"y")
    assert put(tmp_path, A, b"a").name == "invoices-job_a-run1-2.csv"


def test_an_unreadable_manifest_makes_every_existing_file_someone_elses(tmp_path: Path) -> None:
    put(tmp_path, A, b"a")
    (tmp_path / MANIFEST).write_text('{"files": {"invoices-run1.csv": ')  # cut off by a crash
    assert put(tmp_path, A, b"again").name == "invoices-job_a-run1.csv"
    assert (tmp_path / "invoices-run1.csv").read_bytes() == b"a"


def test_the_manifest_records_who_wrote_each_file(tmp_path: Path) -> None:
    put(tmp_path, A, b"a")
    (entry,) = read_manifest(tmp_path).values()
    assert {k: entry[k] for k in ("data_dir", "job_id", "run_id", "format")} == {**A.as_record(), "format": "csv"}
    assert json.loads((tmp_path / MANIFEST).read_text())["version"] == 1


def test_twenty_writers_at_once_each_get_their_own_file(tmp_path: Path) -> None:
    writers = [Writer(data_dir=f"/data/{i}", job_id=f"job_{i}", run_id=f"run_{i}") for i in range(20)]
    barrier = threading.Barrier(len(writers))
    got: dict[str, Path] = {}

    def go(w: Writer) -> None:
        barrier.wait()
        got[w.job_id] = put(tmp_path, w, w.job_id.encode())

    threads = [threading.Thread(target=go, args=(w,)) for w in writers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({p.name for p in got.values()}) == 20
    assert all(p.read_bytes() == job.encode() for job, p in got.items()), "no writer's bytes were replaced"
    assert len(read_manifest(tmp_path)) == 20
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
