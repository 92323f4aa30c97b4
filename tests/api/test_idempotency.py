"""Idempotency-Key: exactly one effect per (user, key) under any interleaving.

The concurrent cases run against the app served over real HTTP on
127.0.0.1, with 20 client threads released together at a barrier.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from common.api.app import api_of, create_app
from common.api.auth import BearerAuthenticator, OidcVerifier
from common.api.errors import ApiError
from common.api.idempotency import PENDING_TIMEOUT_S, Idempotency, Reservation, ReservationGuard, StoredResponse
from common.api.settings import IssuerConfig
from common.core.messages import Message
from common.core.models import Job, Priority
from common.core.schema import preset
from common.service import jobs
from tests.api.conftest import AUDIENCE, ISSUER, JWKS_URL, Env, Keys, build_env, pdf
from tests.api.served import Answer, at_once, serve

N = 20
REPEAT = 2  # each client sends its request twice in a row
JOB = {"name": "once", "preset": "invoice", "exports": [{"format": "csv"}]}


def _owner(env: Env) -> str:
    """alice's owner id, as the app derives it from her token."""
    return api_of(env.app).auth.authenticate(f"Bearer {env.alice.token}").owners[0]


def test_a_rejected_request_never_frees_the_key_of_the_request_that_holds_it(env: Env) -> None:
    h = {"Idempotency-Key": "K"}
    first = env.alice.post("/v1/jobs", JOB, headers=h)
    assert first.status_code == 201
    other = env.alice.post("/v1/jobs", {**JOB, "name": "other"}, headers=h)
    assert other.status_code == 409 and other.get_json()["error"]["code"] == "idempotency_key_reused"
    again = env.alice.post("/v1/jobs", JOB, headers=h)
    assert again.status_code == 201
    assert again.get_json()["id"] == first.get_json()["id"]
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.headers["Location"] == f"/v1/jobs/{first.get_json()['id']}"
    assert env.p.deps.store.count("jobs") == 1


def test_a_request_refused_as_in_progress_leaves_the_holder_its_reservation(env: Env) -> None:
    api = api_of(env.app)
    fp = "fingerprint-of-another-request"
    held = api.idempotency.begin(_owner(env), "K", fp)
    assert isinstance(held, Reservation)
    refused = env.alice.post("/v1/jobs", JOB, headers={"Idempotency-Key": "K"})
    assert refused.status_code == 409 and refused.get_json()["error"]["code"] == "idempotency_key_reused"
    with pytest.raises(ApiError) as err:
        api.idempotency.begin(_owner(env), "K", fp)
    assert err.value.code == "idempotency_key_in_progress"
    assert api.idempotency.finish(held, StoredResponse(201, "{}", "application/json")) is True


def test_twenty_concurrent_posts_with_one_key_create_one_job(durable_env: Env) -> None:
    env = durable_env
    with serve(env.app) as server:
        answers = at_once(
            N,
            lambda _i: server.request(
                "POST", "/v1/jobs", token=env.alice.token, json_body=JOB, headers={"Idempotency-Key": "one"}
            ),
            repeat=REPEAT,
        )
    assert env.p.deps.store.count("jobs") == 1
    (job_id,) = [s.id for s in env.p.deps.store.query("jobs").items]
    _only_the_effect_replays_or_in_progress(answers, 201, job_id)


def test_twenty_concurrent_run_starts_with_one_key_create_one_run(durable_env: Env) -> None:
    env = durable_env
    job = env.alice.job()
    assert env.alice.upload(job["id"], pdf("ok-a.pdf")).status_code == 201
    url = f"/v1/jobs/{job['id']}/runs"
    with serve(env.app) as server:
        answers = at_once(
            N,
            lambda _i: server.request(
                "POST", url, token=env.alice.token, json_body={"priority": "high"}, headers={"Idempotency-Key": "go"}
            ),
            repeat=REPEAT,
        )
    assert env.p.deps.store.count("runs") == 1
    (run_id,) = [s.id for s in env.p.deps.store.query("runs").items]
    _only_the_effect_replays_or_in_progress(answers, 202, run_id)


def _only_the_effect_replays_or_in_progress(answers: list[Answer], status: int, ident: str) -> None:
    made = [a for a in answers if a.status == status and "idempotent-replayed" not in a.headers]
    replayed = [a for a in answers if a.status == status and a.headers.get("idempotent-replayed") == "true"]
    waiting = [a for a in answers if a.status == 409]
    assert len(made) == 1 and made[0].body["id"] == ident
    assert all(a.body == made[0].body for a in replayed)
    assert all(a.body["error"]["code"] == "idempotency_key_in_progress" for a in waiting)
    assert all(a.headers["retry-after"] == "1" for a in waiting)
    assert len(made) + len(replayed) + len(waiting) == N * REPEAT, [(a.status, a.body) for a in answers]


# -- reservations: owner tokens and compare-and-set ---------------------------------


@pytest.fixture
def idem(env: Env) -> Idempotency:
    return Idempotency(env.p.deps.store, env.p.clock, ttl_s=3600)


def test_a_stale_reservation_is_taken_over_by_exactly_one_of_twenty(env: Env, idem: Idempotency) -> None:
    dead = idem.begin("u", "K", "fp")
    assert isinstance(dead, Reservation)
    env.p.clock.advance(PENDING_TIMEOUT_S + 1)
    barrier = threading.Barrier(N)
    won: list[Reservation] = []
    refused: list[str] = []
    lock = threading.Lock()

    def take() -> None:
        barrier.wait(timeout=30)
        try:
            got = idem.begin("u", "K", "fp")
        except ApiError as err:
            with lock:
                refused.append(err.code)
            return
        assert isinstance(got, Reservation)
        with lock:
            won.append(got)

    threads = [threading.Thread(target=take) for _ in range(N)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len(won) == 1 and won[0].token != dead.token
    assert refused == ["idempotency_key_in_progress"] * (N - 1)
    # The request that died (or was only slow) can neither finish nor free the key now.
    assert idem.finish(dead, StoredResponse(201, "{}", "application/json")) is False
    assert idem.release(dead) is False
    assert idem.release(won[0]) is True


def test_a_slow_request_whose_reservation_was_taken_over_makes_no_effect(env: Env, idem: Idempotency) -> None:
    slow = idem.begin("u", "K", "fp")
    assert isinstance(slow, Reservation)
    env.p.clock.advance(PENDING_TIMEOUT_S + 1)
    retry = idem.begin("u", "K", "fp")
    assert isinstance(retry, Reservation)

    def guard(res: Reservation) -> ReservationGuard[Job]:
        return ReservationGuard(idem, res, lambda job: StoredResponse(201, job.id, "text/plain"))

    made = jobs.create_job(env.p.deps, owner="u", name="x", fields=preset("invoice"), guard=guard(retry))
    with pytest.raises(ApiError) as err:
        jobs.create_job(env.p.deps, owner="u", name="x", fields=preset("invoice"), guard=guard(slow))
    assert err.value.code == "idempotency_key_in_progress"
    assert [s.id for s in env.p.deps.store.query("jobs").items] == [made.id]
    replay = idem.begin("u", "K", "fp")
    assert replay == StoredResponse(201, made.id, "text/plain")


def test_only_the_holder_releases_a_reservation(idem: Idempotency) -> None:
    held = idem.begin("u", "K", "fp")
    assert isinstance(held, Reservation)
    impostor = Reservation(owner="u", doc_id=held.doc_id, fingerprint="fp", token="not-the-token")
    assert idem.release(impostor) is False
    with pytest.raises(ApiError):
        idem.begin("u", "K", "fp")  # still held
    assert idem.release(held) is True
    assert isinstance(idem.begin("u", "K", "fp"), Reservation)


class _SendFailsOnce:
    """A sender whose first send fails (after the run was recorded), like a bus outage."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.failed = False

    def send(self, message: Message, *, delay_s: float | None = None, priority: Priority | None = None) -> str:
        if not self.failed:
            self.failed = True
            raise RuntimeError("the bus is unreachable")
        return str(self.inner.send(message, delay_s=delay_s, priority=priority))


@pytest.fixture
def flaky_env(tmp_path: Path, keys: Keys) -> Iterator[Env]:
    env = build_env(tmp_path, keys)
    verifier = OidcVerifier(
        [IssuerConfig(issuer=ISSUER, audience=AUDIENCE, jwks_url=JWKS_URL)], fetcher=keys.fetch, leeway_s=0
    )
    env.app = create_app(
        env.p.deps,
        env.settings,
        authenticator=BearerAuthenticator(verifier),
        sender=_SendFailsOnce(env.p.sender),
        sleep=lambda _s: None,
    )
    env.alice = env.user("alice")
    yield env


def test_a_request_that_failed_after_its_effect_keeps_its_key(flaky_env: Env) -> None:
    env = flaky_env
    job = env.alice.job()
    assert env.alice.upload(job["id"], pdf("ok-a.pdf")).status_code == 201
    h = {"Idempotency-Key": "start"}
    url = f"/v1/jobs/{job['id']}/runs"
    first = env.alice.post(url, {}, headers=h)
    assert first.status_code == 500  # the run was recorded; sending its start failed
    again = env.alice.post(url, {}, headers=h)
    assert again.status_code == 202 and again.headers["Idempotent-Replayed"] == "true"
    assert env.p.deps.store.count("runs") == 1
    assert again.get_json()["id"] == next(iter(env.p.deps.store.query("runs").items)).id
