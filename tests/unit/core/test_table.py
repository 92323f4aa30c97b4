"""Building one table from a run's tasks."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from common.core.errors import PermanentError
from common.core.models import ExtractionTask
from common.core.schema import FieldSpec, FieldType
from common.core.states import TaskStatus
from common.core.table import Failure, build_table

MakeTask = Callable[..., ExtractionTask]

FIELDS = (
    FieldSpec(name="invoice_number"),
    FieldSpec(name="total", type=FieldType.NUMBER),
    FieldSpec(name="date", type=FieldType.DATE),
)


def test_columns_are_the_job_fields_in_order_then_source_file_page_and_duplicate_of() -> None:
    assert build_table(FIELDS, []).columns == ["invoice_number", "total", "date", "source_file", "page", "duplicate_of"]


def test_no_tasks_gives_no_rows_and_no_failures() -> None:
    table = build_table(FIELDS, [])
    assert (table.rows, table.failures) == ([], [])


def test_values_are_placed_by_column_name_not_by_position(make_completed_task: MakeTask) -> None:
    task = make_completed_task(["date", "total", "invoice_number"], [["2024-05-01", 12.5, "INV-1"]], row_pages=[1])
    assert build_table(FIELDS, [task]).rows == [["INV-1", 12.5, "2024-05-01", "a.pdf", 1, None]]


def test_a_field_missing_from_a_result_is_an_empty_cell(make_completed_task: MakeTask) -> None:
    task = make_completed_task(["invoice_number"], [["INV-1"]])
    assert build_table(FIELDS, [task]).rows == [["INV-1", None, None, "a.pdf", None, None]]


def test_extra_result_columns_follow_the_job_fields_in_first_seen_order(make_completed_task: MakeTask) -> None:
    tasks = [
        make_completed_task(["invoice_number", "vat"], [["INV-1", "19%"]], id="t1", file_name="a.pdf"),
        make_completed_task(["iban", "invoice_number", "vat"], [["DE00", "INV-2", "7%"]], id="t2", file_name="b.pdf"),
    ]
    table = build_table(FIELDS, tasks)
    assert table.columns == ["invoice_number", "total", "date", "vat", "iban", "source_file", "page", "duplicate_of"]
    assert table.rows == [
        ["INV-1", None, None, "19%", None, "a.pdf", None, None],
        ["INV-2", None, None, "7%", "DE00", "b.pdf", None, None],
    ]


def test_column_types_come_from_the_job_and_extras_are_strings(make_completed_task: MakeTask) -> None:
    table = build_table(FIELDS, [make_completed_task(["invoice_number", "vat"], [["INV-1", 19]])])
    assert table.types == {
        "invoice_number": FieldType.STRING,
        "total": FieldType.NUMBER,
        "date": FieldType.DATE,
        "vat": FieldType.STRING,
        "source_file": FieldType.STRING,
        "page": FieldType.INTEGER,
        "duplicate_of": FieldType.STRING,
    }


def test_a_multi_row_result_gives_one_row_per_result_row_with_its_page(make_completed_task: MakeTask) -> None:
    task = make_completed_task(
        ["invoice_number", "total"], [["INV-1", 10], ["INV-1", 20], ["INV-1", 30]], row_pages=[1, 2, None]
    )
    assert build_table(FIELDS, [task]).rows == [
        ["INV-1", 10, None, "a.pdf", 1, None],
        ["INV-1", 20, None, "a.pdf", 2, None],
        ["INV-1", 30, None, "a.pdf", None, None],
    ]


def test_rows_without_a_known_page_get_an_empty_page(make_completed_task: MakeTask) -> None:
    task = make_completed_task(["invoice_number"], [["INV-1"], ["INV-2"]], row_pages=[4])
    assert [row[-2] for row in build_table(FIELDS, [task]).rows] == [4, None]


def test_rows_follow_the_order_of_the_tasks(make_completed_task: MakeTask) -> None:
    tasks = [
        make_completed_task(["invoice_number"], [["B"]], id="t2", file_name="b.pdf"),
        make_completed_task(["invoice_number"], [["A"]], id="t1", file_name="a.pdf"),
    ]
    assert [row[0] for row in build_table(FIELDS, tasks).rows] == ["B", "A"]


def test_provenance_columns_in_a_result_neither_add_columns_nor_override_provenance(
    make_completed_task: MakeTask,
) -> None:
    task = make_completed_task(
        ["invoice_number", "source_file", "page", "duplicate_of"],
        [["INV-1", "forged.pdf", 99, "other.pdf"]],
        row_pages=[2],
        file_name="real.pdf",
    )
    table = build_table(FIELDS, [task])
    assert table.columns == ["invoice_number", "total", "date", "source_file", "page", "duplicate_of"]
    assert table.rows == [["INV-1", None, None, "real.pdf", 2, None]]


@pytest.mark.parametrize(
    ("value", "cell"),
    [
        pytest.param("INV-1", "INV-1", id="str"),
        pytest.param(12, 12, id="int"),
        pytest.param(12.5, 12.5, id="float"),
        pytest.param(True, True, id="bool"),
        pytest.param(None, None, id="none"),
        pytest.param({"a": 1}, "{'a': 1}", id="dict-stringified"),
        pytest.param([1, 2], "[1, 2]", id="list-stringified"),
    ],
)
def test_cells_are_scalars(make_completed_task: MakeTask, value: object, cell: object) -> None:
    task = make_completed_task(["invoice_number"], [[value]])
    assert build_table(FIELDS, [task]).rows[0][0] == cell


def test_a_failed_task_becomes_a_failure_with_its_message_and_hint(make_task: MakeTask) -> None:
    error = PermanentError("not a PDF", hint="re-upload it").to_record()
    task = make_task(status=TaskStatus.FAILED, error=error, file_name="broken.pdf")
    table = build_table(FIELDS, [task])
    assert table.rows == []
    assert table.failures == [
        Failure(source_file="broken.pdf", status="failed", error="not a PDF", hint="re-upload it")
    ]


def test_a_cancelled_task_without_an_error_becomes_a_failure_named_by_its_status(make_task: MakeTask) -> None:
    table = build_table(FIELDS, [make_task(status=TaskStatus.CANCELLED, file_name="c.pdf")])
    assert table.failures == [Failure(source_file="c.pdf", status="cancelled", error="cancelled", hint="")]


@pytest.mark.parametrize("status", [TaskStatus.PENDING, TaskStatus.RUNNING])
def test_tasks_that_are_not_finished_are_ignored(make_task: MakeTask, status: TaskStatus) -> None:
    table = build_table(FIELDS, [make_task(status=status)])
    assert (table.rows, table.failures) == ([], [])


def test_successes_and_failures_are_reported_side_by_side(make_task: MakeTask, make_completed_task: MakeTask) -> None:
    tasks = [
        make_completed_task(["invoice_number"], [["INV-1"]], id="t1", file_name="a.pdf"),
        make_task(id="t2", status=TaskStatus.FAILED, file_name="b.pdf", error={"message": "boom"}),
        make_task(id="t3", status=TaskStatus.PENDING, file_name="c.pdf"),
    ]
    table = build_table(FIELDS, tasks)
    assert [row[-3] for row in table.rows] == ["a.pdf"]
    assert [f.source_file for f in table.failures] == ["b.pdf"]


# -- byte-identical files: read once, one row per name ------------------------------


def test_each_duplicate_name_gets_the_documents_rows_naming_the_file_that_was_read(
    make_completed_task: MakeTask,
) -> None:
    task = make_completed_task(
        ["invoice_number", "total"],
        [["INV-1", 10], ["INV-1", 20]],
        row_pages=[1, 2],
        file_name="a/x.pdf",
        duplicate_names=["b/copy.pdf", "c/x.pdf"],
    )
    table = build_table(FIELDS, [task])
    assert table.rows == [
        ["INV-1", 10, None, "a/x.pdf", 1, None],
        ["INV-1", 20, None, "a/x.pdf", 2, None],
        ["INV-1", 10, None, "b/copy.pdf", 1, "a/x.pdf"],
        ["INV-1", 20, None, "b/copy.pdf", 2, "a/x.pdf"],
        ["INV-1", 10, None, "c/x.pdf", 1, "a/x.pdf"],
        ["INV-1", 20, None, "c/x.pdf", 2, "a/x.pdf"],
    ]
    assert table.header.row_count == 6


def test_a_failed_document_is_a_failure_under_each_of_its_names(make_task: MakeTask) -> None:
    task = make_task(
        status=TaskStatus.FAILED,
        file_name="a.pdf",
        duplicate_names=["b.pdf"],
        error=PermanentError("not a PDF", hint="re-upload it").to_record(),
    )
    assert build_table(FIELDS, [task]).failures == [
        Failure(source_file="a.pdf", status="failed", error="not a PDF", hint="re-upload it"),
        Failure(source_file="b.pdf", status="failed", error="not a PDF", hint="re-upload it", duplicate_of="a.pdf"),
    ]


def test_duplicate_of_is_text_so_writers_defuse_a_name_that_looks_like_a_formula(
    make_completed_task: MakeTask,
) -> None:
    task = make_completed_task(["invoice_number"], [[1]], file_name="=x.pdf", duplicate_names=["y.pdf"])
    header = build_table(FIELDS, [task]).header
    assert header.text_positions is not None
    assert header.columns.index("duplicate_of") in header.text_positions
