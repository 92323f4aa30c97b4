"""Putting an embedded SQLite database in WAL mode, safely when many clients open it at once."""

from __future__ import annotations

import random
import sqlite3
import time


def use_wal(conn: sqlite3.Connection, timeout_s: float) -> None:
    """Put the database in WAL mode (it stays so: the mode is kept in the file).

    Switching a fresh file needs an exclusive lock, and SQLite refuses the
    switch at once, without its busy handler, to a connection that meets
    another's lock: several clients opening a new data directory together
    (function instances, worker processes, threads standing for them) would
    fail with "database is locked". So the switch is tried again, with a short
    jittered backoff, until ``timeout_s``.
    """
    deadline = time.monotonic() + timeout_s
    delay = 0.001
    while True:
        try:
            if str(conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]).lower() == "wal":
                return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) and "busy" not in str(exc):
                raise
        if time.monotonic() >= deadline:
            raise sqlite3.OperationalError(f"database is locked: WAL mode not set within {timeout_s:.0f} s")
        time.sleep(delay + random.uniform(0.0, delay))
        delay = min(delay * 2, 0.05)
