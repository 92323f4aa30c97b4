"""Pytest fixtures for the emulator-backed tests.

Import them into a conftest (``from tests.emulators.fixtures import emulators``)
wherever tests take a ``gcp`` parameter. The harness starts once per session,
when the first test that needs it runs, and stops at the session's end; tests
that do not ask for it (``pytest -m "not emulator"``) never start Java.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.emulators import harness


@pytest.fixture(scope="session")
def emulators(tmp_path_factory: pytest.TempPathFactory) -> Iterator[harness.Emulators]:
    from common.adapters.gcp import clients

    try:
        emu = harness.start(tmp_path_factory.mktemp("emulator-logs"))
    except harness.EmulatorUnavailable as exc:
        # Fail, never skip: a missing emulator must not pass as a green run.
        pytest.fail(f"emulators unavailable: {exc}", pytrace=False)
    env = emu.env()
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)  # inherited by spawned child processes too
    clients.reset()
    try:
        yield emu
    finally:
        emu.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        clients.reset()
