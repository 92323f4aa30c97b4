"""Backends for the contract suite.

``store_factory`` gives a zero-argument, picklable callable that opens a
``Store`` on the backend under test: the multi-process tests hand it to child
processes so that they open the same store. ``store`` is one opened in this
process. A backend is one branch in ``store_factory`` plus its name in
``STORE_BACKENDS``.
"""

from __future__ import annotations

import functools
import itertools
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from common.adapters.local.sqlite_store import SqliteStore
from common.ports.store import Store
from tests.emulators.fixtures import emulators

__all__ = ["emulators"]

# "gcp": the Firestore adapter on the Firestore emulator (marked ``emulator``).
STORE_BACKENDS = ["local", pytest.param("gcp", marks=pytest.mark.emulator)]

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
    if backend == "gcp":
        from common.adapters.gcp.firestore_store import FirestoreStore

        emu = request.getfixturevalue("emulators")
        # One emulator for the session; each test gets collections of its own.
        prefix = f"t{os.getpid()}x{next(_test_numbers)}_"
        return functools.partial(FirestoreStore, emu.project, collection_prefix=prefix)
    raise AssertionError(f"no store factory for backend {backend!r}")


_test_numbers = itertools.count()


@pytest.fixture
def store(store_factory: StoreFactory) -> Iterator[Store]:
    opened = store_factory()
    yield opened
    close = getattr(opened, "close", None)  # not part of the port
    if callable(close):
        close()
