"""The retry policy table: (error kind, attempts made) -> retry after N s, or give up.

``attempt`` counts attempts already made, so the first failure is attempt 1.
"""

from __future__ import annotations

from typing import Any

import pytest

from common.core.errors import ErrorKind
from common.core.retry import Backoff, KindRule, RetryPolicy

POLICY = RetryPolicy()
K = ErrorKind


def _rows(kind: ErrorKind, outcomes: list[float | None]) -> list[Any]:
    """``outcomes[i]`` is the delay for attempt ``i + 1``, or ``None`` for "give up"."""
    return [
        pytest.param(kind, attempt, delay, id=f"{kind.value}-attempt{attempt}")
        for attempt, delay in enumerate(outcomes, start=1)
    ]


POLICY_TABLE = [
    *_rows(K.NETWORK, [15, 60, 240, None, None]),
    *_rows(K.SERVER, [15, 60, 240, None, None]),
    *_rows(K.UNAVAILABLE, [15, 60, 240, None]),
    *_rows(K.RATE_LIMITED, [15, 60, 240, 300, 300, None, None]),
    *_rows(K.THROTTLED, [15, 60, 240, 300, 300, 300, 300]),
    *_rows(K.MALFORMED_OUTPUT, [5, 20, None]),
    *_rows(K.CONFLICT, [1, 2, 4, 8, 16, None]),
    *_rows(K.INVALID_INPUT, [None, None]),
    *_rows(K.AUTH, [None, None]),
    *_rows(K.INTERNAL, [None, None]),
]


def test_the_table_covers_every_error_kind() -> None:
    assert {p.values[0] for p in POLICY_TABLE} == set(ErrorKind)


@pytest.mark.parametrize(("kind", "attempt", "delay"), POLICY_TABLE)
def test_default_policy_decision_for_each_kind_and_attempt(kind: ErrorKind, attempt: int, delay: float | None) -> None:
    decision = POLICY.decide(kind, attempt)
    assert decision.retry is (delay is not None)
    assert decision.delay_s == (delay if delay is not None else 0.0)


@pytest.mark.parametrize("kind", [K.NETWORK, K.SERVER, K.UNAVAILABLE, K.RATE_LIMITED])
def test_exponential_backoff_never_exceeds_five_minutes(kind: ErrorKind) -> None:
    rule = POLICY.rules[kind]
    assert rule.backoff is not None
    assert max(rule.backoff.delay(n) for n in range(1, 20)) == 300.0


@pytest.mark.parametrize("kind", [K.INVALID_INPUT, K.AUTH, K.INTERNAL])
def test_kinds_that_are_never_retried_say_so(kind: ErrorKind) -> None:
    assert POLICY.decide(kind, 1).reason == f"{kind.value} errors are not retried"


def test_giving_up_names_the_number_of_attempts_made() -> None:
    assert POLICY.decide(K.NETWORK, 4).reason == "network: gave up after 4 attempts"


def test_retry_reason_names_the_attempt_and_delay() -> None:
    assert POLICY.decide(K.SERVER, 2).reason == "server: retry 2 in 60 s"


@pytest.mark.parametrize("kind", [K.UNAVAILABLE, K.RATE_LIMITED])
@pytest.mark.parametrize(
    ("server_delay", "expected"),
    [
        pytest.param(30.0, 30.0, id="as-asked"),
        pytest.param(0.5, 0.5, id="sub-second"),
        pytest.param(300.0, 300.0, id="at-the-cap"),
        pytest.param(3600.0, 300.0, id="capped-at-300"),
        pytest.param(-5.0, 0.0, id="negative-means-now"),
    ],
)
def test_server_delay_is_honoured_and_capped_at_five_minutes(
    kind: ErrorKind, server_delay: float, expected: float
) -> None:
    decision = POLICY.decide(kind, 1, server_delay_s=server_delay)
    assert decision.retry is True
    assert decision.delay_s == expected


def test_server_delay_reason_says_the_server_asked() -> None:
    assert POLICY.decide(K.RATE_LIMITED, 1, server_delay_s=30).reason == "rate_limited: server asked for 30 s"


@pytest.mark.parametrize(("kind", "last_retry"), [(K.UNAVAILABLE, 3), (K.RATE_LIMITED, 5)])
def test_server_delay_does_not_extend_the_number_of_retries(kind: ErrorKind, last_retry: int) -> None:
    assert POLICY.decide(kind, last_retry, server_delay_s=10).retry is True
    assert POLICY.decide(kind, last_retry + 1, server_delay_s=10).retry is False


@pytest.mark.parametrize("kind", [K.NETWORK, K.SERVER, K.MALFORMED_OUTPUT, K.CONFLICT])
def test_server_delay_is_ignored_for_kinds_that_do_not_honour_it(kind: ErrorKind) -> None:
    assert POLICY.decide(kind, 1, server_delay_s=200).delay_s == POLICY.decide(kind, 1).delay_s


def test_the_server_delay_cap_is_configurable() -> None:
    policy = RetryPolicy(max_server_delay_s=60)
    assert policy.decide(K.RATE_LIMITED, 1, server_delay_s=120).delay_s == 60


def test_a_kind_without_a_rule_is_not_retried() -> None:
    policy = RetryPolicy(rules={K.NETWORK: KindRule(retries=3, backoff=Backoff(base_s=1, factor=2, cap_s=10))})
    decision = policy.decide(K.SERVER, 1)
    assert decision.retry is False


@pytest.mark.parametrize(
    ("attempt", "delay"),
    [(0, 2.0), (1, 2.0), (2, 6.0), (3, 18.0), (4, 20.0), (10, 20.0)],
)
def test_backoff_is_base_times_factor_to_the_attempt_minus_one_capped(attempt: int, delay: float) -> None:
    assert Backoff(base_s=2, factor=3, cap_s=20).delay(attempt) == delay
