"""The document store contract: what every ``Store`` backend must do.

Each test states one behaviour and uses only the ``Store`` port, so it runs
unchanged against every backend in ``conftest.STORE_BACKENDS``. Query
semantics follow Firestore (the cloud backend): filters match values of the
same type only, ``== None`` matches null but not a missing field, ``!=``
matches neither, ordering by a field skips documents without it, and ties are
broken by id in the direction of the last order.

The one SQLite-specific test (index usage) is at the end and says so in its
name.
"""

from __future__ import annotations

import multiprocessing
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from common.adapters.local.sqlite_store import SqliteStore
from common.core.errors import AlreadyExists, NotFound, PreconditionFailed, SluiceError
from common.ports.store import Filter, Order, Page, Snapshot, Store, Transaction

StoreFactory = Callable[[], Store]  # the ``store_factory`` fixture

pytestmark = pytest.mark.timeout(60)


def ids(items: Page | list[Snapshot]) -> list[str]:
    return [s.id for s in (items.items if isinstance(items, Page) else items)]


def must_get(store: Store, collection: str, doc_id: str) -> Snapshot:
    snap = store.get(collection, doc_id)
    assert snap is not None, f"{collection}/{doc_id} is missing"
    return snap


def write_meanwhile(action: Callable[[], object]) -> None:
    """Run ``action`` as another worker would, and wait for it to finish."""
    worker = threading.Thread(target=action)
    worker.start()
    worker.join(timeout=10)
    assert not worker.is_alive(), "a concurrent write was blocked by a transaction"


# -- single documents -----------------------------------------------------------

NESTED: dict[str, Any] = {
    "title": "Zürich — 東京 — 🚀",
    "pages": 12,
    "ratio": 0.25,
    "big": 2**53 + 1,
    "ok": True,
    "missing": None,
    "tags": ["a", "ß", {"deep": [1, 2, {"x": None}]}],
    "counters": {"total": 3, "by_kind": {"pdf": 2, "xlsx": 1}},
}


def test_created_document_reads_back_identically(store: Store) -> None:
    created = store.create("files", "f-1", NESTED)
    got = must_get(store, "files", "f-1")
    assert got.data == NESTED
    assert created.data == NESTED
    assert got.version == created.version


def test_arrays_nested_in_arrays_read_back_identically(store: Store) -> None:
    """A table's rows are arrays of arrays (Firestore stores them only with help)."""
    data: dict[str, Any] = {"rows": [["a", 1, None], [], [[2.5, True], {"k": [["x"]]}]], "empty": []}
    created = store.create("files", "f-1", data)
    assert must_get(store, "files", "f-1").data == data == created.data
    store.set("files", "f-1", {"rows": [[1]]})
    assert must_get(store, "files", "f-1").data == {"rows": [[1]]}


def test_unicode_document_ids_are_kept_exactly(store: Store) -> None:
    store.create("files", "résumé-東京-🚀", {"n": 1})
    assert must_get(store, "files", "résumé-東京-🚀").data == {"n": 1}
    assert store.get("files", "resume-東京-🚀") is None


def test_get_of_a_missing_document_returns_none(store: Store) -> None:
    assert store.get("files", "nope") is None


def test_collections_do_not_share_documents(store: Store) -> None:
    store.create("files", "x", {"kind": "file"})
    store.create("runs", "x", {"kind": "run"})
    assert must_get(store, "files", "x").data == {"kind": "file"}
    assert must_get(store, "runs", "x").data == {"kind": "run"}


def test_creating_an_existing_document_raises_already_exists(store: Store) -> None:
    store.create("files", "f-1", {"n": 1})
    with pytest.raises(AlreadyExists):
        store.create("files", "f-1", {"n": 2})
    assert must_get(store, "files", "f-1").data == {"n": 1}


def test_every_write_changes_the_version(store: Store) -> None:
    versions = [store.create("files", "f-1", {"n": 0}).version]
    versions.append(store.set("files", "f-1", {"n": 1}).version)
    versions.append(store.set("files", "f-1", {"n": 1}).version)  # same data
    versions.append(store.update("files", "f-1", {"m": 2}).version)
    assert len(set(versions)) == len(versions)
    assert must_get(store, "files", "f-1").version == versions[-1]


def test_a_recreated_document_never_reuses_an_old_version(store: Store) -> None:
    old = {store.create("files", "f-1", {"n": 0}).version}
    old.add(store.set("files", "f-1", {"n": 1}).version)
    store.delete("files", "f-1")
    recreated = store.create("files", "f-1", {"n": 0})
    assert recreated.version not in old


def test_set_creates_a_missing_document(store: Store) -> None:
    written = store.set("files", "f-1", {"n": 1})
    assert must_get(store, "files", "f-1") == written


def test_set_replaces_the_whole_document(store: Store) -> None:
    store.create("files", "f-1", {"a": 1, "b": 2})
    store.set("files", "f-1", {"c": 3})
    assert must_get(store, "files", "f-1").data == {"c": 3}


def test_set_with_the_current_version_succeeds(store: Store) -> None:
    current = store.create("files", "f-1", {"n": 1})
    store.set("files", "f-1", {"n": 2}, if_version=current.version)
    assert must_get(store, "files", "f-1").data == {"n": 2}


def test_set_with_a_stale_version_raises_precondition_failed(store: Store) -> None:
    stale = store.create("files", "f-1", {"n": 1})
    store.set("files", "f-1", {"n": 2})
    with pytest.raises(PreconditionFailed):
        store.set("files", "f-1", {"n": 3}, if_version=stale.version)
    assert must_get(store, "files", "f-1").data == {"n": 2}


def test_set_with_a_version_of_a_deleted_document_raises_not_found(
    store: Store,
) -> None:
    seen = store.create("files", "f-1", {"n": 1})
    store.delete("files", "f-1")
    with pytest.raises(NotFound):
        store.set("files", "f-1", {"n": 2}, if_version=seen.version)
    assert store.get("files", "f-1") is None


def test_update_merges_top_level_keys(store: Store) -> None:
    store.create("files", "f-1", {"a": 1, "b": {"x": 1, "y": 2}, "c": 3})
    merged = store.update("files", "f-1", {"b": {"z": 9}, "d": None})
    expected = {"a": 1, "b": {"z": 9}, "c": 3, "d": None}
    assert merged.data == expected
    assert must_get(store, "files", "f-1").data == expected


def test_update_of_a_missing_document_raises_not_found(store: Store) -> None:
    with pytest.raises(NotFound):
        store.update("files", "nope", {"a": 1})
    assert store.get("files", "nope") is None


def test_update_with_a_stale_version_raises_precondition_failed(
    store: Store,
) -> None:
    stale = store.create("files", "f-1", {"n": 1})
    store.update("files", "f-1", {"n": 2})
    with pytest.raises(PreconditionFailed):
        store.update("files", "f-1", {"n": 3}, if_version=stale.version)
    assert must_get(store, "files", "f-1").data == {"n": 2}


def test_update_with_the_current_version_succeeds(store: Store) -> None:
    current = store.create("files", "f-1", {"n": 1})
    store.update("files", "f-1", {"n": 2}, if_version=current.version)
    assert must_get(store, "files", "f-1").data == {"n": 2}


def test_delete_reports_whether_a_document_was_deleted(store: Store) -> None:
    store.create("files", "f-1", {"n": 1})
    assert store.delete("files", "f-1") is True
    assert store.get("files", "f-1") is None
    assert store.delete("files", "f-1") is False


def test_delete_with_the_current_version_deletes(store: Store) -> None:
    current = store.create("files", "f-1", {"n": 1})
    assert store.delete("files", "f-1", if_version=current.version) is True
    assert store.get("files", "f-1") is None


def test_delete_with_a_stale_version_raises_and_keeps_the_document(
    store: Store,
) -> None:
    stale = store.create("files", "f-1", {"n": 1})
    store.set("files", "f-1", {"n": 2})
    with pytest.raises(PreconditionFailed):
        store.delete("files", "f-1", if_version=stale.version)
    assert must_get(store, "files", "f-1").data == {"n": 2}


def test_get_many_returns_existing_documents_in_the_order_asked(store: Store) -> None:
    for doc_id in ("a", "b", "c"):
        store.create("files", doc_id, {"id": doc_id})
    found = store.get_many("files", ["c", "missing", "a", "b"])
    assert ids(found) == ["c", "a", "b"]
    assert [s.data["id"] for s in found] == ["c", "a", "b"]
    assert store.get_many("files", []) == []


# -- queries --------------------------------------------------------------------

TASKS: dict[str, dict[str, Any]] = {
    "t1": {
        "run_id": "r1",
        "status": "queued",
        "priority": 2,
        "done": False,
        "counters": {"total": 10},
        "note": None,
    },
    "t2": {
        "run_id": "r1",
        "status": "running",
        "priority": 1,
        "done": False,
        "counters": {"total": 5},
        "note": "urgent",
    },
    "t3": {
        "run_id": "r1",
        "status": "done",
        "priority": 3,
        "done": True,
        "counters": {"total": 7},
    },
    # Look-alikes of other types: 1 for true, "2" for 2, "true" for true.
    "t4": {
        "run_id": "r2",
        "status": "queued",
        "priority": 2.5,
        "done": 1,
        "counters": {"total": 1},
        "note": None,
    },
    "t5": {"run_id": "r2", "status": "failed", "priority": "2", "done": "true"},
}


@pytest.fixture
def tasks(store: Store) -> Store:
    for doc_id, data in TASKS.items():
        store.create("tasks", doc_id, data)
    return store


def where(store: Store, *filters: Filter) -> list[str]:
    return sorted(ids(store.query("tasks", filters=filters)))


def test_query_without_filters_returns_every_document_by_id(tasks: Store) -> None:
    page = tasks.query("tasks")
    assert ids(page) == ["t1", "t2", "t3", "t4", "t5"]
    assert page.items[0].data == TASKS["t1"]
    assert page.next_cursor is None


def test_query_of_an_empty_collection_returns_nothing(store: Store) -> None:
    page = store.query("nothing_here", filters=[Filter("a", "==", 1)])
    assert page.items == []
    assert page.next_cursor is None


def test_equal_filter_on_a_string(tasks: Store) -> None:
    assert where(tasks, Filter("status", "==", "queued")) == ["t1", "t4"]


def test_equal_filter_matches_numbers_only(tasks: Store) -> None:
    assert where(tasks, Filter("priority", "==", 2)) == ["t1"]  # not "2"
    assert where(tasks, Filter("priority", "==", 2.5)) == ["t4"]
    assert where(tasks, Filter("priority", "==", "2")) == ["t5"]


def test_equal_filter_on_booleans_matches_booleans_only(tasks: Store) -> None:
    assert where(tasks, Filter("done", "==", True)) == ["t3"]  # not 1, not "true"
    assert where(tasks, Filter("done", "==", False)) == ["t1", "t2"]
    assert where(tasks, Filter("done", "==", 1)) == ["t4"]


def test_equal_none_matches_null_but_not_a_missing_field(tasks: Store) -> None:
    assert where(tasks, Filter("note", "==", None)) == ["t1", "t4"]


def test_not_equal_skips_documents_without_the_field_or_with_null(
    tasks: Store,
) -> None:
    assert where(tasks, Filter("status", "!=", "queued")) == ["t2", "t3", "t5"]
    assert where(tasks, Filter("note", "!=", None)) == ["t2"]
    assert where(tasks, Filter("note", "!=", "other")) == ["t2"]


def test_not_equal_treats_other_types_as_different(tasks: Store) -> None:
    assert where(tasks, Filter("done", "!=", True)) == ["t1", "t2", "t4", "t5"]


@pytest.mark.parametrize(
    ("op", "value", "expected"),
    [
        ("<", 2, ["t2"]),
        ("<=", 2, ["t1", "t2"]),
        (">", 2, ["t3", "t4"]),
        (">=", 2.5, ["t3", "t4"]),
        (">=", "1", ["t5"]),  # strings compare with strings only
    ],
)
def test_range_filters_compare_values_of_the_same_type(tasks: Store, op: Any, value: Any, expected: list[str]) -> None:
    assert where(tasks, Filter("priority", op, value)) == expected


def test_range_filter_on_strings(tasks: Store) -> None:
    assert where(tasks, Filter("status", ">=", "q")) == ["t1", "t2", "t4"]
    assert where(tasks, Filter("status", "<", "f")) == ["t3"]


def test_filter_on_a_dotted_path_reaches_nested_values(tasks: Store) -> None:
    assert where(tasks, Filter("counters.total", ">=", 7)) == ["t1", "t3"]
    assert where(tasks, Filter("counters.total", "==", 5)) == ["t2"]


def test_in_filter_matches_any_listed_value(tasks: Store) -> None:
    assert where(tasks, Filter("status", "in", ["queued", "done"])) == [
        "t1",
        "t3",
        "t4",
    ]


def test_in_filter_matches_each_value_by_type(tasks: Store) -> None:
    assert where(tasks, Filter("priority", "in", [1, "2"])) == ["t2", "t5"]
    assert where(tasks, Filter("done", "in", [True, None])) == ["t3"]
    assert where(tasks, Filter("note", "in", [None, "urgent"])) == ["t1", "t2", "t4"]


def test_filters_combine_with_and(tasks: Store) -> None:
    found = where(
        tasks,
        Filter("run_id", "==", "r1"),
        Filter("status", "in", ["queued", "running", "failed"]),
        Filter("counters.total", ">", 5),
    )
    assert found == ["t1"]


def test_count_counts_matching_documents(tasks: Store) -> None:
    assert tasks.count("tasks") == 5
    assert tasks.count("tasks", filters=[Filter("run_id", "==", "r1")]) == 3
    assert tasks.count("tasks", filters=[Filter("done", "==", True)]) == 1
    assert tasks.count("nothing_here") == 0


def test_sum_totals_the_numbers_of_matching_documents(tasks: Store) -> None:
    assert tasks.sum("tasks", ["counters.total"], filters=[Filter("run_id", "==", "r1")]) == {"counters.total": 22}
    # A missing field counts nothing (t5), and so does a value that is not a number ("2" in t5, bools).
    assert tasks.sum("tasks", ["counters.total", "priority", "done"]) == {
        "counters.total": 23,
        "priority": 8.5,
        "done": 1,
    }
    assert tasks.sum("tasks", ["a", "b", "c", "d", "e", "counters.total"], filters=[Filter("run_id", "==", "r2")]) == {
        "a": 0,
        "b": 0,
        "c": 0,
        "d": 0,
        "e": 0,
        "counters.total": 1,
    }
    assert tasks.sum("nothing_here", ["x"]) == {"x": 0}


def test_order_ascending(tasks: Store) -> None:
    page = tasks.query(
        "tasks",
        filters=[Filter("counters.total", ">", 0)],
        order_by=[Order("counters.total")],
    )
    assert ids(page) == ["t4", "t2", "t3", "t1"]


def test_order_descending(tasks: Store) -> None:
    page = tasks.query("tasks", filters=[Filter("run_id", "==", "r1")], order_by=[Order("priority", "desc")])
    assert ids(page) == ["t3", "t1", "t2"]


def test_ties_are_broken_by_id_in_the_direction_of_the_last_order(
    store: Store,
) -> None:
    for doc_id, group in [("b", 1), ("d", 2), ("a", 1), ("c", 2), ("e", 1)]:
        store.create("items", doc_id, {"group": group})
    asc = store.query("items", order_by=[Order("group")])
    desc = store.query("items", order_by=[Order("group", "desc")])
    assert ids(asc) == ["a", "b", "e", "c", "d"]
    assert ids(desc) == ["d", "c", "e", "b", "a"]


def test_order_by_two_fields(store: Store) -> None:
    rows = [("a", 1, "y"), ("b", 2, "x"), ("c", 1, "x"), ("d", 2, "y")]
    for doc_id, group, name in rows:
        store.create("items", doc_id, {"group": group, "name": name})
    page = store.query("items", order_by=[Order("group", "desc"), Order("name")])
    assert ids(page) == ["b", "d", "c", "a"]


def test_ordering_by_a_field_skips_documents_without_it(tasks: Store) -> None:
    page = tasks.query("tasks", order_by=[Order("note")])
    assert ids(page) == ["t1", "t4", "t2"]  # nulls first, then strings


def test_inequality_filter_without_an_order_sorts_by_the_filtered_field(
    tasks: Store,
) -> None:
    """Firestore orders by inequality-filtered fields before the id."""
    page = tasks.query("tasks", filters=[Filter("priority", ">", 1)])
    assert ids(page) == ["t1", "t4", "t3"]  # 2, 2.5, 3


def test_limit_returns_the_first_documents(tasks: Store) -> None:
    page = tasks.query("tasks", order_by=[Order("counters.total", "desc")], limit=2)
    assert ids(page) == ["t1", "t3"]
    assert page.next_cursor is not None


def walk(store: Store, page_size: int, **query: Any) -> Iterator[Page]:
    cursor: str | None = None
    while True:
        page = store.query("items", limit=page_size, start_after=cursor, **query)
        yield page
        cursor = page.next_cursor
        if cursor is None:
            return


@pytest.mark.parametrize(("total", "page_size"), [(25, 7), (21, 7), (3, 10), (1, 1)])
@pytest.mark.parametrize(
    "query",
    [
        {},
        {"order_by": [Order("group", "desc")]},
        {"order_by": [Order("group"), Order("score", "desc")]},
        {"filters": [Filter("kept", "==", True)], "order_by": [Order("score")]},
    ],
    ids=["by-id", "desc-with-ties", "two-orders", "filtered"],
)
def test_pagination_visits_every_document_exactly_once(
    store: Store, total: int, page_size: int, query: dict[str, Any]
) -> None:
    for i in range(total):
        store.create(
            "items",
            f"doc-{i:03}",
            {"group": i % 3, "score": (i * 7) % 5 + 0.5 * (i % 2), "kept": True},
        )
    store.create("items", "zz-other", {"group": 1, "score": 1, "kept": False})
    expected = {f"doc-{i:03}" for i in range(total)}
    if "filters" not in query:
        expected.add("zz-other")
    everything = ids(store.query("items", **query))  # the same query, unpaged
    assert sorted(everything) == sorted(expected)

    pages = list(walk(store, page_size, **query))
    walked = [doc_id for page in pages for doc_id in ids(page)]

    assert walked == everything  # same order, none repeated, none skipped
    assert all(len(page.items) <= page_size for page in pages)
    assert all(page.items for page in pages), "no empty trailing page"
    assert len(pages) == -(-len(everything) // page_size)


def test_pagination_by_value_with_ties_across_page_boundaries(store: Store) -> None:
    for i in range(10):
        store.create("items", f"d{i}", {"group": "same"})
    pages = list(walk(store, 3, order_by=[Order("group")]))
    assert [ids(p) for p in pages] == [
        ["d0", "d1", "d2"],
        ["d3", "d4", "d5"],
        ["d6", "d7", "d8"],
        ["d9"],
    ]


@pytest.mark.parametrize("direction", ["asc", "desc"])
def test_pagination_over_a_field_holding_nulls_numbers_and_strings(store: Store, direction: Any) -> None:
    values: list[Any] = [None, 3, "b", None, 1.5, "a", 3, None, "b", 0]
    for i, value in enumerate(values):
        store.create("items", f"d{i}", {"v": value})
    store.create("items", "no-v", {"other": 1})
    query: dict[str, Any] = {"order_by": [Order("v", direction)]}
    everything = ids(store.query("items", **query))

    walked = [doc_id for page in walk(store, 2, **query) for doc_id in ids(page)]

    assert walked == everything
    assert sorted(walked) == sorted(f"d{i}" for i in range(len(values)))


# -- transactions ---------------------------------------------------------------


def test_transaction_commits_all_its_writes_and_returns_the_result(
    store: Store,
) -> None:
    store.create("acc", "from", {"balance": 10})
    store.create("acc", "gone", {"balance": 0})

    def transfer(tx: Transaction) -> int:
        src = tx.get("acc", "from")
        assert src is not None
        tx.set("acc", "from", {"balance": src.data["balance"] - 4})
        tx.create("acc", "to", {"balance": 4})
        tx.delete("acc", "gone")
        return 4

    assert store.transaction(transfer) == 4
    assert must_get(store, "acc", "from").data == {"balance": 6}
    assert must_get(store, "acc", "to").data == {"balance": 4}
    assert store.get("acc", "gone") is None


def test_exception_in_a_transaction_propagates_and_writes_nothing(
    store: Store,
) -> None:
    before = store.create("acc", "a", {"balance": 10})

    class Refused(Exception):
        pass

    def fn(tx: Transaction) -> None:
        tx.get("acc", "a")
        tx.set("acc", "a", {"balance": 0})
        tx.create("acc", "b", {"balance": 10})
        raise Refused

    with pytest.raises(Refused):
        store.transaction(fn)
    assert must_get(store, "acc", "a") == before
    assert store.get("acc", "b") is None


def test_reading_after_writing_in_a_transaction_is_refused(store: Store) -> None:
    """As in Firestore: every read comes before the first write."""

    def fn(tx: Transaction) -> None:
        tx.set("acc", "a", {"n": 1})
        tx.get("acc", "b")

    with pytest.raises(SluiceError) as raised:
        store.transaction(fn)
    assert raised.value.code == "read_after_write"
    assert store.get("acc", "a") is None


def test_transactional_create_of_an_existing_document_raises_already_exists(
    store: Store,
) -> None:
    store.create("locks", "L", {"owner": "first"})
    calls = 0

    def fn(tx: Transaction) -> None:
        nonlocal calls
        calls += 1
        tx.create("locks", "L", {"owner": "second"})

    with pytest.raises(AlreadyExists):
        store.transaction(fn)
    assert calls == 1, "AlreadyExists is an answer, not a conflict to retry"
    assert must_get(store, "locks", "L").data == {"owner": "first"}


def test_transaction_that_read_a_document_changed_meanwhile_runs_again(
    store: Store,
) -> None:
    """Reads A, writes B: a change to A before the commit must not be lost."""
    store.create("acc", "A", {"n": 1})
    seen: list[int] = []

    def copy_a_to_b(tx: Transaction) -> None:
        a = tx.get("acc", "A")
        assert a is not None
        seen.append(a.data["n"])
        if len(seen) == 1:
            write_meanwhile(lambda: store.set("acc", "A", {"n": 2}))
        tx.set("acc", "B", {"n": a.data["n"]})

    store.transaction(copy_a_to_b)
    assert seen == [1, 2]
    assert must_get(store, "acc", "B").data == {"n": 2}


def test_transaction_notices_a_document_deleted_and_recreated_meanwhile(
    store: Store,
) -> None:
    store.create("acc", "A", {"n": 1})
    seen: list[int] = []

    def copy_a_to_b(tx: Transaction) -> None:
        a = tx.get("acc", "A")
        assert a is not None
        seen.append(a.data["n"])
        if len(seen) == 1:

            def recreate() -> None:
                store.delete("acc", "A")
                store.create("acc", "A", {"n": 2})

            write_meanwhile(recreate)
        tx.set("acc", "B", {"n": a.data["n"]})

    store.transaction(copy_a_to_b)
    assert seen == [1, 2]
    assert must_get(store, "acc", "B").data == {"n": 2}


def test_transaction_that_read_a_missing_document_conflicts_if_it_appears(
    store: Store,
) -> None:
    attempts = 0

    def create_unless_present(tx: Transaction) -> str:
        nonlocal attempts
        attempts += 1
        if tx.get("locks", "L") is not None:
            return "taken"
        if attempts == 1:
            write_meanwhile(lambda: store.create("locks", "L", {"owner": "other"}))
        tx.create("locks", "L", {"owner": "me"})
        return "mine"

    assert store.transaction(create_unless_present) == "taken"
    assert attempts == 2
    assert must_get(store, "locks", "L").data == {"owner": "other"}


def test_transaction_gives_up_with_precondition_failed_after_max_attempts(
    store: Store,
) -> None:
    store.create("acc", "A", {"n": 0})
    attempts = 0

    def always_overtaken(tx: Transaction) -> None:
        nonlocal attempts
        attempts += 1
        a = tx.get("acc", "A")
        assert a is not None
        write_meanwhile(lambda: store.set("acc", "A", {"n": a.data["n"] + 1}))
        tx.set("acc", "B", {"n": a.data["n"]})

    with pytest.raises(PreconditionFailed):
        store.transaction(always_overtaken, max_attempts=3)
    assert attempts == 3
    assert store.get("acc", "B") is None


def increment(store: Store, times: int) -> None:
    def bump(tx: Transaction) -> None:
        counter = tx.get("counters", "c")
        assert counter is not None
        tx.set("counters", "c", {"n": counter.data["n"] + 1})

    for _ in range(times):
        # Generous attempts: this checks for lost updates, not the retry limit.
        store.transaction(bump, max_attempts=1000)


def test_concurrent_transactional_increments_from_threads_lose_nothing(
    store: Store,
) -> None:
    threads, times = 8, 40
    store.create("counters", "c", {"n": 0})
    start = threading.Barrier(threads)
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            start.wait(timeout=10)
            increment(store, times)
        except BaseException as exc:  # re-raised as the assertion below
            errors.append(exc)

    pool = [threading.Thread(target=worker) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join(timeout=30)
    assert not errors
    assert must_get(store, "counters", "c").data == {"n": threads * times}


def increment_in_child(factory: StoreFactory, start: threading.Barrier, times: int) -> None:
    """Entry point of a child process (module level, so spawn can import it)."""
    store = factory()
    start.wait(timeout=30)
    increment(store, times)


def test_concurrent_transactional_increments_from_processes_lose_nothing(
    store: Store, store_factory: StoreFactory
) -> None:
    processes, times = 3, 100
    store.create("counters", "c", {"n": 0})
    # spawn: children start clean (no inherited connections or locks), as
    # separate service instances would.
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Barrier(processes)
    children = [ctx.Process(target=increment_in_child, args=(store_factory, start, times)) for _ in range(processes)]
    for child in children:
        child.start()
    for child in children:
        child.join(timeout=45)
    assert [child.exitcode for child in children] == [0] * processes
    assert must_get(store, "counters", "c").data == {"n": processes * times}


def test_racing_transactions_creating_the_same_document_have_one_winner(
    store: Store,
) -> None:
    both_read = threading.Barrier(2)
    outcome: dict[str, bool] = {}

    def contender(name: str) -> None:
        first_attempt = True

        def claim(tx: Transaction) -> bool:
            nonlocal first_attempt
            existing = tx.get("locks", "L")
            if first_attempt:
                first_attempt = False
                both_read.wait(timeout=10)  # both saw it absent
            if existing is not None:
                return False
            tx.create("locks", "L", {"owner": name})
            return True

        outcome[name] = store.transaction(claim)

    racers = [threading.Thread(target=contender, args=(n,)) for n in ("x", "y")]
    for t in racers:
        t.start()
    for t in racers:
        t.join(timeout=20)
    assert sorted(outcome.values()) == [False, True]
    winner = next(name for name, won in outcome.items() if won)
    assert must_get(store, "locks", "L").data == {"owner": winner}


def test_racing_plain_creates_of_the_same_document_have_one_winner(
    store: Store,
) -> None:
    go = threading.Barrier(4)
    results: list[str] = []

    def racer(name: str) -> None:
        go.wait(timeout=10)
        try:
            store.create("locks", "L", {"owner": name})
            results.append(name)
        except AlreadyExists:
            results.append("lost")

    racers = [threading.Thread(target=racer, args=(f"r{i}",)) for i in range(4)]
    for t in racers:
        t.start()
    for t in racers:
        t.join(timeout=20)
    winners = [r for r in results if r != "lost"]
    assert len(results) == 4 and len(winners) == 1
    assert must_get(store, "locks", "L").data == {"owner": winners[0]}


def _at_a_barrier(n: int, body: Callable[[int], None]) -> list[BaseException]:
    """Run ``body(i)`` on ``n`` threads released together; their errors."""
    go = threading.Barrier(n)
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            go.wait(timeout=10)
            body(i)
        except BaseException as exc:  # re-raised as the caller's assertion
            errors.append(exc)

    pool = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in pool:
        t.start()
    for t in pool:
        t.join(timeout=45)
    return errors


def test_twenty_compare_and_sets_on_one_version_have_one_winner(store: Store) -> None:
    start = store.create("claims", "task", {"owner": None})
    won: list[int] = []
    lost: list[int] = []

    def claim(i: int) -> None:
        try:
            store.set("claims", "task", {"owner": i}, if_version=start.version)
            won.append(i)
        except PreconditionFailed:
            lost.append(i)

    assert _at_a_barrier(20, claim) == []
    assert len(won) == 1 and len(lost) == 19
    assert must_get(store, "claims", "task").data == {"owner": won[0]}


def test_twenty_transactions_at_once_each_commit_or_fail_on_their_own(store: Store) -> None:
    # Every thread claims its own task and bumps a shared counter; three of them
    # also create a document that already exists, so only those three fail, and
    # none of their writes (not even their counter bump) is kept.
    store.create("counters", "c", {"n": 0})
    store.create("claims", "taken", {"owner": "earlier"})
    failing = {3, 11, 17}
    refused: list[int] = []

    def claim(i: int) -> None:
        def fn(tx: Transaction) -> None:
            counter = tx.get("counters", "c")
            assert counter is not None
            tx.set("counters", "c", {"n": counter.data["n"] + 1})
            tx.create("claims", f"t{i}", {"owner": i})
            if i in failing:
                tx.create("claims", "taken", {"owner": i})

        try:
            store.transaction(fn, max_attempts=1000)
        except AlreadyExists:
            refused.append(i)

    assert _at_a_barrier(20, claim) == []
    assert sorted(refused) == sorted(failing)
    assert must_get(store, "counters", "c").data == {"n": 20 - len(failing)}
    claimed = {snap.id for snap in store.query("claims").items}
    assert claimed == {"taken"} | {f"t{i}" for i in range(20) if i not in failing}
    assert must_get(store, "claims", "taken").data == {"owner": "earlier"}


def test_twenty_plain_writes_at_once_are_all_kept(store: Store) -> None:
    def write(i: int) -> None:
        store.create("tasks", f"t{i:02d}", {"i": i})
        store.update("tasks", f"t{i:02d}", {"done": True})

    assert _at_a_barrier(20, write) == []
    page = store.query("tasks")
    assert [snap.data for snap in page.items] == [{"i": i, "done": True} for i in range(20)]


# -- local backend only -----------------------------------------------------------


def test_local_sqlite_store_answers_indexed_filters_from_the_index(
    tmp_path: Path,
) -> None:
    store = SqliteStore(
        tmp_path / "store.db",
        durable=False,
        indexes={"tasks": ["run_id", "run_id,status"]},
    )
    try:
        for i in range(200):
            store.create("tasks", f"t{i}", {"run_id": f"r{i % 4}", "status": "queued"})

        by_run = store.explain("tasks", filters=[Filter("run_id", "==", "r1")])
        by_run_and_status = store.explain(
            "tasks",
            filters=[Filter("run_id", "==", "r1"), Filter("status", "==", "done")],
        )
        paged = store.explain("tasks", filters=[Filter("run_id", "==", "r1")], limit=10)
        unindexed = store.explain("tasks", filters=[Filter("priority", "==", 1)])
    finally:
        store.close()

    assert any("INDEX ix_tasks__run_id_" in step for step in by_run), by_run
    assert any("INDEX ix_tasks__run_id__status_" in step for step in by_run_and_status)
    # Ordered by id within the index: no sort step for a paged query.
    assert not any("TEMP B-TREE" in step for step in paged), paged
    assert not any(step.startswith("SCAN") for step in by_run + by_run_and_status)
    assert any(step.startswith("SCAN") for step in unindexed), unindexed
