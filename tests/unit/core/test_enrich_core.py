"""The pure part of sheet enrichment: column types, the prompt template, batch answers."""

from __future__ import annotations

import pytest

from common.core import jsonschema_subset
from common.core.enrich import (
    ColumnType,
    EnrichSettings,
    OutputColumn,
    RowAnswer,
    RowProblem,
    batch_prompt,
    batch_schema,
    check_template,
    is_filled,
    item_ranges,
    parse_batch,
    parse_output,
    placeholders,
    render,
    row_batches,
)
from common.core.errors import PermanentError

CATEGORY = OutputColumn(name="category", type=ColumnType.ENUM, values=("food", "tools"))
PRICE = OutputColumn(name="price", type=ColumnType.NUMBER)
SUMMARY = OutputColumn(name="summary")


def test_an_output_spec_reads_name_type_and_enum_values() -> None:
    assert parse_output("category:enum[a, b,c]") == OutputColumn(
        name="category", type=ColumnType.ENUM, values=("a", "b", "c")
    )
    assert parse_output("price:number").type is ColumnType.NUMBER
    assert parse_output("ok:boolean").type is ColumnType.BOOLEAN
    assert parse_output("summary").type is ColumnType.TEXT


@pytest.mark.parametrize("spec", ["category:enum", "x:date", ":text", "row:text", "x:text[a]"])
def test_a_bad_output_spec_is_a_clear_error(spec: str) -> None:
    with pytest.raises(PermanentError) as err:
        parse_output(spec)
    assert err.value.code == "invalid_output"


def test_each_column_type_becomes_its_json_schema() -> None:
    assert CATEGORY.value_schema() == {"type": "string", "enum": ["food", "tools"]}
    assert PRICE.value_schema() == {"type": "number"}
    assert OutputColumn(name="ok", type=ColumnType.BOOLEAN).value_schema() == {"type": "boolean"}
    assert SUMMARY.value_schema() == {"type": "string"}


def test_the_template_names_its_columns_once_each_and_escaped_braces_are_literal() -> None:
    assert placeholders("{name} in {city}, {name} {{not this}}") == ["name", "city"]


def test_render_fills_placeholders_and_leaves_escaped_braces() -> None:
    assert render("Classify {name} ({Unit price}) {{json}}", {"name": "hammer", "Unit price": "9"}) == (
        "Classify hammer (9) {json}"
    )


def test_an_unknown_placeholder_is_a_clear_error_naming_the_columns() -> None:
    with pytest.raises(PermanentError) as err:
        check_template("Classify {name} from {vendor}", ["name", "price"])
    assert err.value.code == "unknown_placeholder"
    assert "{vendor}" in err.value.message
    assert "name, price" in err.value.hint


def test_a_batch_prompt_carries_every_row_under_its_number() -> None:
    text = batch_prompt("Item: {name}", [(5, {"name": "hammer"}), (6, {"name": "bread"})], [CATEGORY])
    assert "### Row 5\nItem: hammer" in text
    assert "### Row 6\nItem: bread" in text
    assert "category: one of food, tools" in text


def test_a_batch_answer_validates_each_row_on_its_own() -> None:
    answer = {
        "rows": [
            {"row": 2, "category": "tools", "price": 9.0},
            {"row": 3, "category": "toys", "price": 1},  # not an allowed value
            {"row": 4, "category": "food"},  # price missing
            {"row": 99, "category": "food", "price": 1},  # not asked: ignored
        ]
    }
    out = parse_batch(answer, [2, 3, 4, 5], [CATEGORY, PRICE])
    assert out[2] == RowAnswer({"category": "tools", "price": 9})
    assert isinstance(out[3], RowProblem) and "toys" in out[3].reason
    assert isinstance(out[4], RowProblem) and "price: missing" in out[4].reason
    assert out[5] == RowProblem("the model gave no answer for this row")
    assert 99 not in out


def test_a_row_answered_twice_differently_fails_that_row_only() -> None:
    answer = {"rows": [{"row": 2, "summary": "a"}, {"row": 2, "summary": "b"}, {"row": 3, "summary": "c"}]}
    out = parse_batch(answer, [2, 3], [SUMMARY])
    assert isinstance(out[2], RowProblem)
    assert out[3] == RowAnswer({"summary": "c"})


def test_an_answer_without_rows_fails_every_row() -> None:
    out = parse_batch(["not", "an", "object"], [2, 3], [SUMMARY])
    assert all(isinstance(o, RowProblem) for o in out.values())


def test_a_boolean_is_not_a_number() -> None:
    out = parse_batch({"rows": [{"row": 2, "price": True}]}, [2], [PRICE])
    assert isinstance(out[2], RowProblem)


def test_the_batch_schema_accepts_what_parse_batch_accepts() -> None:
    answer = {"rows": [{"row": 2, "category": "food", "summary": "x"}]}
    assert jsonschema_subset.problems(answer, batch_schema([CATEGORY, SUMMARY])) == []
    assert jsonschema_subset.problems({"rows": [{"row": 2}]}, batch_schema([SUMMARY])) == ["$.rows[0].summary: missing"]


def test_a_row_is_filled_only_when_every_output_cell_holds_something() -> None:
    assert is_filled({"category": "food", "summary": "x"}, [CATEGORY, SUMMARY])
    assert not is_filled({"category": "food", "summary": " "}, [CATEGORY, SUMMARY])


def test_rows_split_into_consecutive_batches() -> None:
    assert row_batches(2, 11, 4) == [(2, 5), (6, 9), (10, 11)]


def test_settings_refuse_duplicate_outputs_and_a_first_row_inside_the_header() -> None:
    with pytest.raises(ValueError, match="named twice"):
        EnrichSettings(source="s.csv", prompt="{a}", outputs=(SUMMARY, SUMMARY))
    with pytest.raises(ValueError, match="after header_row"):
        EnrichSettings(source="s.csv", prompt="{a}", outputs=(SUMMARY,), header_row=3, first_row=3)
    assert EnrichSettings(source="s.csv", prompt="{a}", outputs=(SUMMARY,), header_row=3).start_row == 4


def test_a_run_fans_out_into_row_ranges_once_its_row_count_is_known() -> None:
    s = EnrichSettings(source="s.csv", prompt="{a}", outputs=(SUMMARY,), row_count=450, rows_per_item=200)
    assert item_ranges(s) == [(2, 201), (202, 401), (402, 451)]
    with pytest.raises(PermanentError) as err:
        item_ranges(s.model_copy(update={"row_count": None}))
    assert err.value.code == "enrich_rows_unknown"
