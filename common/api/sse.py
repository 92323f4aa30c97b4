"""Server-Sent Events for an operation's progress.

The stream polls the operation (merged with its run's live counters), sends
an ``progress`` event whenever something a person would see changed, a
comment line as keep-alive, and ends with a ``done`` event once the
operation is final. A stream lasts at most ``max_s`` (a Cloud Function's
request timeout is near); the ``retry`` field tells the browser's
EventSource to reconnect, and ``Last-Event-ID`` is not needed because every
event carries the full state.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

from common.api.schemas import OperationOut
from common.core.errors import NotFound
from common.ports.store import ChangeFeed

KEEPALIVE_S = 15.0
# With a change feed, a stream reloads at most this often: a burst of writes
# (hundreds of tasks a second) costs one load, and a write is seen within it.
MIN_RELOAD_S = 0.05


def _visible(op: OperationOut) -> tuple[object, ...]:
    return (op.status, op.stage, op.done, op.failed, op.cancelled, op.total, op.message, op.error)


def _event(name: str, seq: int, data: str) -> str:
    return f"id: {seq}\nevent: {name}\ndata: {data}\n\n"


def operation_events(
    load: Callable[[], OperationOut],
    *,
    poll_s: float,
    max_s: float,
    sleep: Callable[[float], None] = time.sleep,
    monotonic: Callable[[], float] = time.monotonic,
    changes: ChangeFeed | None = None,
) -> Iterator[str]:
    """``changes``: the store's change feed (the embedded backend); the stream
    then reloads when a write commits, in this process or a worker process (at
    most every :data:`MIN_RELOAD_S`), instead of waiting out ``poll_s``, which
    still bounds the wait should the feed miss one."""
    yield "retry: 2000\n\n"
    started = last_sent = monotonic()
    seen: tuple[object, ...] | None = None
    seq = 0
    while True:
        # Counted before the load, so a write committed during it wakes the next wait.
        cursor = changes.change_count() if changes is not None else 0
        loaded = monotonic()
        try:
            op = load()
        except NotFound:
            yield _event("error", seq + 1, '{"error": {"code": "not_found", "message": "operation is gone"}}')
            return
        if _visible(op) != seen:
            seen = _visible(op)
            seq += 1
            yield _event("progress", seq, op.model_dump_json())
            last_sent = monotonic()
        if op.final:
            seq += 1
            yield _event("done", seq, op.model_dump_json())
            return
        if monotonic() - started >= max_s:
            return  # the client reconnects (retry: above)
        if monotonic() - last_sent >= KEEPALIVE_S:
            yield ": keep-alive\n\n"
            last_sent = monotonic()
        if changes is None:
            sleep(poll_s)
            continue
        changes.wait_for_change(cursor, poll_s)
        gap = loaded + MIN_RELOAD_S - monotonic()
        if gap > 0:
            sleep(gap)
