"""A lazily built client is built once, however many threads ask for it first at the same instant."""

from __future__ import annotations

import threading
import time

from common.adapters.lazy import Lazy


def test_twenty_threads_asking_at_once_get_the_one_client_built_once() -> None:
    built: list[object] = []

    def build() -> object:
        time.sleep(0.01)  # widen the window in which a second build could start
        built.append(object())
        return built[-1]

    lazy = Lazy(build)
    barrier = threading.Barrier(20)
    got: list[object] = []

    def ask() -> None:
        barrier.wait()
        got.append(lazy.get())

    threads = [threading.Thread(target=ask) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(built) == 1 and got == built * 20


def test_nothing_is_built_until_asked() -> None:
    calls: list[int] = []
    Lazy(lambda: calls.append(1))
    assert calls == []
