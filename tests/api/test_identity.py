"""A user is (issuer, subject): two trusted issuers' "alice" are two users, and
records stored under a bare subject (before owner ids were qualified) stay
with that subject of the legacy issuer (the first configured, unless set)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from flask import Flask

from common.api.app import create_app
from common.api.auth import BearerAuthenticator, OidcVerifier, owner_id
from common.api.settings import ApiSettings, IssuerConfig
from common.core.schema import preset
from common.service import jobs
from tests.api.conftest import AUDIENCE, Keys, User, make_keys
from tests.support import Pipeline, make_pipeline

ISSUER_A = "https://a.issuer.test"
ISSUER_B = "https://b.issuer.test"
JWKS = {ISSUER_A: f"{ISSUER_A}/jwks.json", ISSUER_B: f"{ISSUER_B}/jwks.json"}


class TwoIssuers:
    def __init__(self, tmp: Path, *, legacy_issuer: str | None = None) -> None:
        self.keys: dict[str, Keys] = {ISSUER_A: make_keys("ka"), ISSUER_B: make_keys("kb")}
        self.p: Pipeline = make_pipeline(tmp)
        verifier = OidcVerifier(
            [IssuerConfig(issuer=i, audience=AUDIENCE, jwks_url=JWKS[i]) for i in (ISSUER_A, ISSUER_B)],
            fetcher=self._fetch,
            leeway_s=0,
            legacy_issuer=legacy_issuer,
        )
        self.app: Flask = create_app(
            self.p.deps,
            ApiSettings(rate_limit_rpm=0),
            authenticator=BearerAuthenticator(verifier),
            sender=self.p.sender,
            sleep=lambda _s: None,
        )

    def _fetch(self, url: str) -> dict[str, Any]:
        (issuer,) = [i for i, u in JWKS.items() if u == url]
        return self.keys[issuer].jwks

    def user(self, issuer: str, sub: str) -> User:
        keys = self.keys[issuer]
        now = int(time.time())
        claims = {"iss": issuer, "aud": AUDIENCE, "sub": sub, "iat": now, "exp": now + 600}
        token = jwt.encode(claims, keys.private, algorithm="RS256", headers={"kid": keys.kid})
        return User(self.app.test_client(), token, sub)


@pytest.fixture
def two(tmp_path: Path) -> TwoIssuers:
    return TwoIssuers(tmp_path)


def _ids(user: User, url: str) -> list[str]:
    r = user.get(url)
    assert r.status_code == 200, r.get_json()
    return [item["id"] for item in r.get_json()["items"]]


def test_the_same_subject_at_two_issuers_is_two_users(two: TwoIssuers) -> None:
    a_alice, b_alice = two.user(ISSUER_A, "alice"), two.user(ISSUER_B, "alice")
    a_job = a_alice.job("a's")
    b_job = b_alice.job("b's")
    assert _ids(a_alice, "/v1/jobs") == [a_job["id"]]
    assert _ids(b_alice, "/v1/jobs") == [b_job["id"]]
    assert b_alice.get(f"/v1/jobs/{a_job['id']}").status_code == 404
    assert b_alice.patch(f"/v1/jobs/{a_job['id']}", {"name": "mine now"}).status_code == 404
    assert b_alice.delete(f"/v1/jobs/{a_job['id']}").status_code == 404
    assert a_alice.get(f"/v1/jobs/{a_job['id']}").get_json()["name"] == "a's"


def test_owner_ids_are_stable_and_qualified_by_issuer(two: TwoIssuers) -> None:
    job = two.user(ISSUER_B, "alice").job()
    stored = two.p.deps.store.get("jobs", job["id"])
    assert stored is not None
    assert stored.data["owner"] == owner_id(ISSUER_B, "alice") != owner_id(ISSUER_A, "alice")
    assert owner_id(ISSUER_B, "alice") == owner_id(ISSUER_B, "alice")


def _legacy_job(p: Pipeline, sub: str) -> str:
    """A job as stored before owner ids were qualified: owned by the bare subject."""
    return jobs.create_job(p.deps, owner=sub, name="from before", fields=preset("invoice")).id


def test_records_of_a_bare_subject_stay_with_that_subject_of_the_legacy_issuer(two: TwoIssuers) -> None:
    job_id = _legacy_job(two.p, "alice")
    a_alice, b_alice = two.user(ISSUER_A, "alice"), two.user(ISSUER_B, "alice")  # A is configured first
    new = a_alice.job("new")
    assert sorted(_ids(a_alice, "/v1/jobs")) == sorted([job_id, new["id"]])
    assert a_alice.patch(f"/v1/jobs/{job_id}", {"name": "renamed"}).status_code == 200
    assert a_alice.upload(job_id, ("ok-a.pdf", b"%PDF-1.4 a")).status_code == 201
    run = a_alice.post(f"/v1/jobs/{job_id}/runs", {})
    assert run.status_code == 202, run.get_json()
    assert a_alice.get(f"/v1/runs/{run.get_json()['id']}").status_code == 200
    assert a_alice.post(f"/v1/runs/{run.get_json()['id']}/cancel").status_code == 200
    assert _ids(b_alice, "/v1/jobs") == []
    assert b_alice.get(f"/v1/jobs/{job_id}").status_code == 404
    assert b_alice.get(f"/v1/runs/{run.get_json()['id']}").status_code == 404


def test_the_legacy_issuer_is_configurable(tmp_path: Path) -> None:
    two = TwoIssuers(tmp_path, legacy_issuer=ISSUER_B)
    job_id = _legacy_job(two.p, "alice")
    assert _ids(two.user(ISSUER_B, "alice"), "/v1/jobs") == [job_id]
    assert _ids(two.user(ISSUER_A, "alice"), "/v1/jobs") == []


def test_a_subject_named_like_an_owner_id_reaches_no_one_elses_records(two: TwoIssuers) -> None:
    b_alice = two.user(ISSUER_B, "alice")
    job = b_alice.job()
    impostor = two.user(ISSUER_A, owner_id(ISSUER_B, "alice"))  # of the legacy issuer
    assert impostor.get(f"/v1/jobs/{job['id']}").status_code == 404
    assert _ids(impostor, "/v1/jobs") == []


def test_the_legacy_issuer_setting_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLUICE_API_LEGACY_ISSUER", ISSUER_B)
    assert ApiSettings().legacy_issuer == ISSUER_B
