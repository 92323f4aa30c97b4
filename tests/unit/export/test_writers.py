"""The CSV and XLSX writers: exact values and types read back, formula injection inert."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import openpyxl
import pytest

from common.core.schema import FieldSpec, FieldType, Scalar
from common.core.table import Failure, TableHeader, plan
from common.export.writers import write_csv, write_xlsx
from tests.unit.core.conftest import _completed_task as make_completed_task

INJECTIONS = ['=HYPERLINK("http://x","y")', "+1", "-2+3", "@SUM(A1)", "\t=cmd", "\r=cmd"]

HEADER = TableHeader(
    columns=["invoice_number", "date", "total", "note", "source_file", "page"],
    types={
        "invoice_number": FieldType.STRING,
        "date": FieldType.DATE,
        "total": FieldType.NUMBER,
        "note": FieldType.STRING,
        "source_file": FieldType.STRING,
        "page": FieldType.INTEGER,
    },
    text_positions=(0, 1, 3, 4),
    failures=[Failure(source_file="bad.pdf", status="failed", error="not a PDF", hint="re-upload")],
)


def rows() -> list[list[Scalar]]:
    injected: list[list[Scalar]] = [
        [f"INV-{i}", "2026-03-02", 10, inj, "b.pdf", None] for i, inj in enumerate(INJECTIONS, start=2)
    ]
    return [["INV-1", "2026-03-01", -12.5, "fine", "a.pdf", 1], *injected, ["INV-9", None, None, None, "c.pdf", 2]]


def read_csv(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text.lstrip("\ufeff"))))


def test_csv_round_trips_values_with_proper_quoting() -> None:
    buf = io.StringIO()
    header = HEADER.model_copy(update={"text_positions": (0, 1, 3, 4)})
    n = write_csv(header, [["a,b", "2026-01-01", 1.5, 'say "hi"\nbye', "x.pdf", 3]], buf)
    assert n == 1
    assert read_csv(buf.getvalue()) == [HEADER.columns, ["a,b", "2026-01-01", "1.5", 'say "hi"\nbye', "x.pdf", "3"]]


def test_csv_can_start_with_a_bom_for_excel() -> None:
    buf = io.StringIO()
    write_csv(HEADER, [], buf, bom=True)
    assert buf.getvalue().startswith("\ufeffinvoice_number,")


@pytest.mark.parametrize("payload", INJECTIONS)
def test_csv_defuses_formula_text_with_a_leading_quote(payload: str) -> None:
    buf = io.StringIO()
    write_csv(HEADER, [["INV", "2026-01-01", 1, payload, "a.pdf", 1]], buf)
    assert read_csv(buf.getvalue())[1][3] == "'" + payload


def test_csv_keeps_negative_numbers_as_numbers() -> None:
    buf = io.StringIO()
    write_csv(HEADER, [["INV", "2026-01-01", -12.5, "x", "a.pdf", 1]], buf)
    assert read_csv(buf.getvalue())[1][2] == "-12.5"


def test_csv_defuses_text_even_in_a_column_the_plan_thought_numeric() -> None:
    header = HEADER.model_copy(update={"text_positions": None})
    buf = io.StringIO()
    write_csv(header, [["INV", "2026-01-01", "=1+1", "x", "a.pdf", 1]], buf)
    assert read_csv(buf.getvalue())[1][2] == "'=1+1"


def test_csv_does_not_change_the_rows_it_was_given() -> None:
    data = rows()
    write_csv(HEADER, data, io.StringIO())
    assert data == rows()


def test_xlsx_reads_back_with_exact_values_and_types(tmp_path: Path) -> None:
    path = tmp_path / "t.xlsx"
    assert write_xlsx(HEADER, rows(), str(path)) == len(rows())
    wb = openpyxl.load_workbook(path)
    ws = wb["Results"]
    assert [c.value for c in ws[1]] == HEADER.columns
    first = [c for c in ws[2]]
    assert first[0].value == "INV-1" and first[0].data_type == "s"
    assert first[1].is_date and first[1].value.date().isoformat() == "2026-03-01"
    assert first[2].data_type == "n" and first[2].value == -12.5
    assert first[5].value == 1
    assert ws.freeze_panes == "A2"
    assert ws.cell(row=2 + len(INJECTIONS) + 1, column=2).value is None


def test_xlsx_writes_formula_text_as_strings_never_formulas(tmp_path: Path) -> None:
    path = tmp_path / "t.xlsx"
    write_xlsx(HEADER, rows(), str(path))
    ws = openpyxl.load_workbook(path)["Results"]
    notes = [ws.cell(row=r, column=4) for r in range(3, 3 + len(INJECTIONS))]
    # xlsxwriter stores a carriage return as the OOXML escape _x000D_, which openpyxl does not decode.
    assert [str(c.value).replace("_x000D_", "\r") for c in notes] == INJECTIONS
    assert all(c.data_type == "s" for c in notes), "a formula would have data_type 'f'"


def test_xlsx_lists_failed_documents_on_their_own_sheet(tmp_path: Path) -> None:
    path = tmp_path / "t.xlsx"
    write_xlsx(HEADER, rows(), str(path))
    fs = openpyxl.load_workbook(path)["Failures"]
    assert [[c.value for c in r] for r in fs.iter_rows()] == [
        ["source_file", "status", "error", "hint", "duplicate_of"],
        ["bad.pdf", "failed", "not a PDF", "re-upload", None],
    ]


def test_plan_marks_only_columns_that_hold_text() -> None:
    fields = [FieldSpec(name="invoice_number"), FieldSpec(name="total", type=FieldType.NUMBER)]
    header = plan(fields, [make_completed_task(["invoice_number", "total"], [["INV-1", 12.5], ["INV-2", -3]])])
    assert header.columns == ["invoice_number", "total", "source_file", "page", "duplicate_of"]
    assert header.text_positions == (0, 2, 4), "total held only numbers; page is never text"
    assert header.row_count == 2


def test_plan_notices_text_in_a_typed_numeric_column() -> None:
    fields = [FieldSpec(name="total", type=FieldType.NUMBER)]
    header = plan(fields, [make_completed_task(["total"], [["-2+3"]])])
    assert 0 in (header.text_positions or ())
