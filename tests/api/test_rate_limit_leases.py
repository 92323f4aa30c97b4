"""The API's per-user rate limit without a hot document: a busy user's
requests spend leased tokens, so no limiter document takes every request."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from tests.api.conftest import Keys, build_env


class LimiterWrites:
    """The store, counting transactions' writes to the rate-limit documents."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.writes: Counter[str] = Counter()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def transaction(self, fn: Any, **kw: Any) -> Any:
        written: list[str] = []

        def counted(t: Any) -> Any:
            written.clear()
            outer = written

            class Tx:
                def __getattr__(self, name: str) -> Any:
                    return getattr(t, name)

                def set(self, c: str, d: str, data: Any) -> None:
                    if c == "ratelimits":
                        outer.append(d)
                    t.set(c, d, data)

            return fn(Tx())

        result = self._inner.transaction(counted, **kw)
        self.writes.update(written)
        return result


def test_a_busy_users_requests_write_no_limiter_document_each(tmp_path: Path, keys: Keys) -> None:
    env = build_env(tmp_path, keys, rate_limit_rpm=600)  # a burst of 60, then 540 a minute
    counter = LimiterWrites(env.p.deps.store)
    env.p.deps.store = counter
    served = 0
    for _ in range(60):  # two requests a second for 30 s
        env.p.clock.advance(0.5)
        served += env.alice.get("/v1/jobs").status_code == 200
    assert served == 60, "well within the limit, every request is served"
    assert max(counter.writes.values()) <= 30 / 5, "no limiter document is written more than once in 5 s"
    assert sum(counter.writes.values()) <= 60 / 2, "a lease serves several requests"


def test_the_limit_still_holds_over_a_minute(tmp_path: Path, keys: Keys) -> None:
    env = build_env(tmp_path, keys, rate_limit_rpm=60)  # a burst of 6, then 54 a minute
    served = 0
    for _ in range(600):  # ten requests a second for a minute
        env.p.clock.advance(0.1)
        served += env.alice.get("/v1/jobs").status_code == 200
    assert 54 <= served <= 60
