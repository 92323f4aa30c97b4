"""Authentication, per-user isolation, idempotency keys and the per-user rate limit."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest

from common.api.app import create_app, make_authenticator
from common.api.auth import OidcVerifier
from common.api.settings import ApiSettings, IssuerConfig, entra_issuer, firebase_issuer, google_issuer
from common.core.errors import ConfigError
from tests.api.conftest import AUDIENCE, ISSUER, JWKS_URL, Env, Keys, build_env, make_keys, mint, pdf
from tests.support import make_pipeline


def _status(env: Env, token: str | None, header: str | None = None) -> tuple[int, str]:
    headers = {}
    if header is not None:
        headers["Authorization"] = header
    elif token is not None:
        headers["Authorization"] = f"Bearer {token}"
    r = env.app.test_client().get("/v1/jobs", headers=headers)
    return r.status_code, r.get_json()["error"]["message"] if r.status_code != 200 else ""


def test_bad_tokens_are_401(env: Env, keys: Keys) -> None:
    other = make_keys("k1")  # same kid, another key: a forged signature
    now = int(time.time())
    cases = {
        "no token": (None, None, "bearer token is required"),
        "not bearer": (None, "Basic YWxpY2U6cHc=", "Bearer <token>"),
        "garbage": ("abc.def", None, "not a JWT"),
        "expired": (mint(keys, "alice", exp=now - 60, iat=now - 700), None, "expired"),
        "wrong audience": (mint(keys, "alice", aud="someone-else"), None, "audience"),
        "wrong issuer": (mint(keys, "alice", iss="https://evil.test"), None, "issuer"),
        "bad signature": (mint(other, "alice"), None, "signature"),
        "no subject": (mint(keys, None), None, "sub"),
        "no expiry": (mint(keys, "alice", exp=None), None, "exp"),
        "not yet valid": (mint(keys, "alice", nbf=now + 3600), None, "not yet valid"),
    }
    for name, (token, header, needle) in cases.items():
        status, message = _status(env, token, header)
        assert status == 401, name
        assert needle in message, (name, message)
    r = env.app.test_client().get("/v1/jobs")
    assert r.headers["WWW-Authenticate"].startswith("Bearer")
    assert _status(env, mint(keys, "alice"))[0] == 200


def test_unsigned_and_hs256_tokens_are_refused(env: Env, keys: Keys) -> None:
    import jwt

    now = int(time.time())
    claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": "alice", "exp": now + 60}
    none_alg = jwt.encode(claims, None, algorithm="none")  # type: ignore[arg-type]
    assert _status(env, none_alg)[0] == 401
    hs = jwt.encode(claims, "secret-of-at-least-32-bytes-length!", algorithm="HS256", headers={"kid": keys.kid})
    assert _status(env, hs)[0] == 401


def test_jwks_is_cached_and_refetched_for_an_unknown_key(keys: Keys) -> None:
    clock = [1000.0]
    fetched: list[str] = []
    current = {"jwks": keys.jwks}

    def fetch(url: str) -> dict[str, object]:
        fetched.append(url)
        return current["jwks"]

    verifier = OidcVerifier(
        [IssuerConfig(issuer=ISSUER, audience=AUDIENCE, jwks_url=JWKS_URL)],
        fetcher=fetch,
        jwks_ttl_s=600,
        now=lambda: clock[0],
    )
    for _ in range(5):
        assert verifier.verify(mint(keys, "alice")).sub == "alice"
    assert len(fetched) == 1, "cached"
    rotated = make_keys("k2")
    current["jwks"] = {"keys": keys.jwks["keys"] + rotated.jwks["keys"]}
    clock[0] += 120  # past the minimum refresh interval
    assert verifier.verify(mint(rotated, "bob")).sub == "bob"
    assert len(fetched) == 2, "an unknown kid refreshed the keys early"
    clock[0] += 700
    verifier.verify(mint(keys, "alice"))
    assert len(fetched) == 3, "the TTL expired"


def test_issuer_presets() -> None:
    assert firebase_issuer("proj").issuer == "https://securetoken.google.com/proj"
    assert firebase_issuer("proj").audience == "proj"
    assert entra_issuer("tid", "cid").jwks_url == "https://login.microsoftonline.com/tid/discovery/v2.0/keys"
    g = google_issuer("cid.apps.googleusercontent.com")
    assert g.aliases == ("accounts.google.com",) and g.audience.startswith("cid")
    s = ApiSettings(firebase_project="p", google_client_id="c", entra_tenant="t", entra_client_id="e")
    assert [i.issuer for i in s.all_issuers()] == [
        "https://securetoken.google.com/p",
        "https://login.microsoftonline.com/t/v2.0",
        "https://accounts.google.com",
    ]


def test_no_auth_configured_is_a_loud_error_never_auth_off(tmp_path: Path) -> None:
    p = make_pipeline(tmp_path)
    with pytest.raises(ConfigError, match="no way to authenticate"):
        create_app(p.deps, ApiSettings())


def test_the_development_identity_is_explicit_and_announced(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    p = make_pipeline(tmp_path)
    with caplog.at_level(logging.WARNING, logger="sluice.api"):
        app = create_app(p.deps, ApiSettings(dev_identity="dev", rate_limit_rpm=0), sender=p.sender)
    assert any("DEVELOPMENT IDENTITY" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)
    client = app.test_client()
    r = client.post("/v1/jobs", json={"name": "x", "preset": "invoice"})
    assert r.status_code == 201
    assert client.get(f"/v1/jobs/{r.get_json()['id']}").status_code == 200
    bad = client.get("/v1/jobs", headers={"Authorization": "Bearer nope"})
    assert bad.status_code == 401, "a token, when sent, is still verified"


def test_the_development_identity_is_refused_off_the_embedded_backend(tmp_path: Path) -> None:
    p = make_pipeline(tmp_path)
    p.deps.settings = p.deps.settings.model_copy(update={"backend": "gcp"})
    with pytest.raises(ConfigError, match="only on the embedded backend"):
        make_authenticator(p.deps, ApiSettings(dev_identity="dev"))


def test_another_users_records_are_404_and_nothing_changes(env: Env) -> None:
    a, b = env.alice, env.bob
    job = a.job()
    assert a.upload(job["id"], pdf("ok-a.pdf"), pdf("bad-b.pdf")).status_code == 201
    env.drain()
    run = a.post(f"/v1/jobs/{job['id']}/runs", {}).get_json()
    env.drain()
    export = a.post(f"/v1/runs/{run['id']}/exports", {"format": "csv"}).get_json()
    env.drain()
    file_id = a.get(f"/v1/jobs/{job['id']}/files").get_json()["items"][0]["id"]
    before = {
        "job": a.get(f"/v1/jobs/{job['id']}").get_json(),
        "run": a.get(f"/v1/runs/{run['id']}").get_json(),
        "export": a.get(f"/v1/exports/{export['id']}").get_json(),
        "files": len(env.p.files(job["id"])),
    }
    attempts = [
        b.get(f"/v1/jobs/{job['id']}"),
        b.patch(f"/v1/jobs/{job['id']}", {"name": "mine now"}),
        b.delete(f"/v1/jobs/{job['id']}"),
        b.get(f"/v1/jobs/{job['id']}/files"),
        b.upload(job["id"], pdf("ok-evil.pdf")),
        b.post(f"/v1/jobs/{job['id']}/uploads", {"name": "x.pdf"}),
        b.delete(f"/v1/jobs/{job['id']}/files/{file_id}"),
        b.post(f"/v1/jobs/{job['id']}/runs", {}),
        b.get(f"/v1/jobs/{job['id']}/runs"),
        b.get(f"/v1/runs/{run['id']}"),
        b.get(f"/v1/runs/{run['id']}/tasks"),
        b.post(f"/v1/runs/{run['id']}/cancel"),
        b.post(f"/v1/runs/{run['id']}/pause"),
        b.post(f"/v1/runs/{run['id']}/resume"),
        b.post(f"/v1/runs/{run['id']}/retry", {}),
        b.post(f"/v1/runs/{run['id']}/exports", {"format": "csv"}),
        b.get(f"/v1/runs/{run['id']}/exports"),
        b.get(f"/v1/exports/{export['id']}"),
        b.get(f"/v1/operations/{run['operation_id']}"),
        b.get(f"/v1/operations/{run['operation_id']}/events"),
        b.post(f"/v1/jobs/{job['id']}/imports/drive", {"item_ids": ["x"]}),
        b.post("/v1/automations", {"name": "a", "account": "b@example.com", "job_id": job["id"]}),
    ]
    for r in attempts:
        assert r.status_code == 404, (r.request.method, r.request.path, r.status_code, r.get_json())
        assert r.get_json()["error"]["code"] == "not_found"
    assert b.get("/v1/jobs").get_json()["items"] == []
    assert b.get("/v1/runs").get_json()["items"] == []
    assert b.get("/v1/operations").get_json()["items"] == []
    after = {
        "job": a.get(f"/v1/jobs/{job['id']}").get_json(),
        "run": a.get(f"/v1/runs/{run['id']}").get_json(),
        "export": a.get(f"/v1/exports/{export['id']}").get_json(),
        "files": len(env.p.files(job["id"])),
    }
    before["export"].pop("url")
    after["export"].pop("url")
    assert after == before
    assert env.p.deps.store.count("runs") == 1


def test_idempotency_keys_replay_the_same_response(env: Env) -> None:
    body = {"name": "once", "preset": "invoice"}
    first = env.alice.post("/v1/jobs", body, headers={"Idempotency-Key": "k-1"})
    second = env.alice.post("/v1/jobs", body, headers={"Idempotency-Key": "k-1"})
    assert first.status_code == second.status_code == 201
    assert first.get_json() == second.get_json()
    assert second.headers.get("Idempotent-Replayed") == "true"
    assert env.p.deps.store.count("jobs") == 1
    other = env.alice.post("/v1/jobs", {**body, "name": "twice"}, headers={"Idempotency-Key": "k-1"})
    assert other.status_code == 409 and other.get_json()["error"]["code"] == "idempotency_key_reused"
    bobs = env.bob.post("/v1/jobs", body, headers={"Idempotency-Key": "k-1"})
    assert bobs.status_code == 201 and bobs.get_json()["id"] != first.get_json()["id"], "keys are per user"


def test_idempotent_run_start_and_upload(env: Env) -> None:
    job = env.alice.job()
    h = {"Idempotency-Key": "up-1"}
    u1 = env.alice.upload(job["id"], pdf("ok-a.pdf"), headers=h)
    u2 = env.alice.upload(job["id"], pdf("ok-a.pdf"), headers=h)
    assert u1.status_code == u2.status_code == 201 and u1.get_json() == u2.get_json()
    assert env.alice.upload(job["id"], pdf("ok-b.pdf"), headers=h).status_code == 409
    env.drain()
    h = {"Idempotency-Key": "run-1"}
    r1 = env.alice.post(f"/v1/jobs/{job['id']}/runs", {"priority": "high"}, headers=h)
    r2 = env.alice.post(f"/v1/jobs/{job['id']}/runs", {"priority": "high"}, headers=h)
    assert r1.get_json()["id"] == r2.get_json()["id"]
    assert env.p.deps.store.count("runs") == 1


def test_a_failed_request_releases_its_idempotency_key(env: Env) -> None:
    h = {"Idempotency-Key": "k-2"}
    assert env.alice.post("/v1/jobs", {"name": "x"}, headers=h).status_code == 422
    assert env.alice.post("/v1/jobs", {"name": "x", "preset": "invoice"}, headers=h).status_code == 201
    assert env.alice.post("/v1/jobs", {"name": "x"}, headers={"Idempotency-Key": ""}).status_code == 422


def test_the_rate_limit_is_per_user_with_retry_after(tmp_path: Path, keys: Keys) -> None:
    env = build_env(tmp_path, keys, rate_limit_rpm=20)  # a burst of 2, then 18 a minute
    codes = [env.alice.get("/v1/jobs").status_code for _ in range(4)]
    assert codes[:2] == [200, 200] and codes[2:] == [429, 429]
    r = env.alice.get("/v1/jobs")
    assert r.get_json()["error"]["code"] == "rate_limited"
    assert int(r.headers["Retry-After"]) >= 1
    assert env.bob.get("/v1/jobs").status_code == 200, "another user has their own bucket"
    env.p.clock.advance(int(r.headers["Retry-After"]))
    assert env.alice.get("/v1/jobs").status_code == 200
