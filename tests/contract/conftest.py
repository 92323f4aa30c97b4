"""Backends for the contract suite.

``store_factory`` gives a zero-argument, picklable callable that opens a
``Store`` on the backend under test: the multi-process tests hand it to child
processes so that they open the same store. ``store`` is one opened in this
process. A backend is one branch in ``store_factory`` plus its name in
``STORE_BACKENDS``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from common.adapters.local.sqlite_store import SqliteStore
from common.ports.store import Store

# "gcp" (the Firestore emulator) joins here with its adapter.
STORE_BACKENDS = ["local"]

# The fields the suite filters on, indexed where a backend takes index hints.
CONTRACT_INDEXES = {"tasks": ["run_id", "status", "run_id,status"]}

StoreFactory = Callable[[], Store]


@pytest.fixture(params=STORE_BACKENDS)
def store_factory(request: pytest.FixtureRequest, tmp_path: Path) -> StoreFactory:
    backend: str = request.param
    if backend == "local":
        # Not durable: an fsync per write would only slow the suite down; the
        # concurrency guarantees do not depend on it.
        return functools.partial(SqliteStore, tmp_path / "store.db", durable=False, indexes=CONTRACT_INDEXES)
    raise AssertionError(f"no store factory for backend {backend!r}")


@pytest.fixture
def store(store_factory: StoreFactory) -> Iterator[Store]:
    opened = store_factory()
    yield opened
    close = getattr(opened, "close", None)  # not part of the port
    if callable(close):
        close()
