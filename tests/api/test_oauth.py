"""Connecting a Google account through the API: consent URL, callback, code
exchange (with PKCE) at a local fake token endpoint, refresh token stored
encrypted."""

from __future__ import annotations

import base64
import hashlib
import json
import threading
import urllib.parse
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from common.adapters.google import GoogleOAuth
from common.api.auth import owner_id
from common.core.models import Integration
from tests.api.conftest import ISSUER, Env, Keys, build_env

CLIENT_ID, CLIENT_SECRET = "client-1.apps.googleusercontent.com", "shh"
DRIVE_SCOPES = "https://www.googleapis.com/auth/drive.readonly https://www.googleapis.com/auth/drive.file"


def _id_token(email: str) -> str:
    def part(d: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(d).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'RS256'})}.{part({'email': email, 'email_verified': True})}.sig"


class FakeGoogle:
    """Google's token endpoint for the authorization-code grant, checking PKCE."""

    def __init__(self) -> None:
        self.challenge: str | None = None
        self.redirect_uri: str | None = None
        self.forms: list[dict[str, str]] = []
        self.answer: tuple[int, dict[str, Any]] | None = None
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                form = dict(urllib.parse.parse_qsl(self.rfile.read(int(self.headers["Content-Length"])).decode()))
                fake.forms.append(form)
                status, body = fake.exchange(form)
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *a: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.token_uri = f"http://127.0.0.1:{self.server.server_port}/token"

    def exchange(self, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        if self.answer is not None:
            return self.answer
        verifier = form.get("code_verifier", "")
        digest = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
        ok = (
            form.get("grant_type") == "authorization_code"
            and form.get("code") == "good-code"
            and (form.get("client_id"), form.get("client_secret")) == (CLIENT_ID, CLIENT_SECRET)
            and form.get("redirect_uri") == self.redirect_uri
            and digest == self.challenge
        )
        if not ok:
            return 400, {"error": "invalid_grant", "error_description": "Bad Request"}
        return 200, {
            "access_token": "at-1",
            "expires_in": 3599,
            "refresh_token": "rt-secret-1",
            "scope": f"openid {DRIVE_SCOPES} https://www.googleapis.com/auth/userinfo.email",
            "id_token": _id_token("Alice@Example.com"),
        }


@pytest.fixture
def google() -> Iterator[FakeGoogle]:
    fake = FakeGoogle()
    yield fake
    fake.server.shutdown()


@pytest.fixture
def env(tmp_path: Path, keys: Keys, google: FakeGoogle) -> Env:
    e = build_env(tmp_path, keys)
    deps = e.p.deps
    deps.settings = deps.settings.model_copy(
        update={
            "google_client_id": CLIENT_ID,
            "google_client_secret": SecretStr(CLIENT_SECRET),
            "google_token_uri": google.token_uri,
        }
    )
    deps.google_auth = GoogleOAuth(
        deps.store,
        deps.clock,
        key=b"k" * 32,
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
        token_uri=google.token_uri,
    )
    return e


def _consent(env: Env, google: FakeGoogle, features: list[str] | None = None) -> dict[str, str]:
    r = env.alice.post("/v1/integrations/google", {"features": features or ["drive"]})
    assert r.status_code == 201, r.get_json()
    query = dict(urllib.parse.parse_qsl(urllib.parse.urlparse(r.get_json()["authorization_url"]).query))
    google.challenge, google.redirect_uri = query["code_challenge"], query["redirect_uri"]
    return query


def test_start_returns_googles_consent_url_with_pkce_and_the_scopes_asked(env: Env, google: FakeGoogle) -> None:
    q = _consent(env, google)
    assert (q["client_id"], q["response_type"], q["access_type"], q["code_challenge_method"]) == (
        CLIENT_ID,
        "code",
        "offline",
        "S256",
    )
    scopes = q["scope"].split()
    assert scopes[:2] == ["openid", "email"] and set(scopes[2:]) == set(DRIVE_SCOPES.split())
    assert q["redirect_uri"].endswith("/v1/integrations/google/callback")
    assert len(q["state"]) >= 32


def test_the_callback_connects_the_account_and_stores_the_token_encrypted(env: Env, google: FakeGoogle) -> None:
    q = _consent(env, google)
    r = env.alice.client.get(f"/v1/integrations/google/callback?state={q['state']}&code=good-code")
    assert r.status_code == 200, r.get_json()
    body = r.get_json()
    assert (body["account"], body["status"]) == ("alice@example.com", "connected")
    assert set(DRIVE_SCOPES.split()) <= set(body["scopes"])
    (record,) = [Integration.from_doc(s.data) for s in env.p.deps.store.query(Integration.collection).items]
    assert record.owner == owner_id(ISSUER, "alice")
    assert record.token_ciphertext and "rt-secret-1" not in record.token_ciphertext
    listed = env.alice.get("/v1/integrations").get_json()["items"]
    assert [i["account"] for i in listed] == ["alice@example.com"]
    assert env.bob.get("/v1/integrations").get_json()["items"] == [], "bob sees none of alice's accounts"


def test_a_state_works_once(env: Env, google: FakeGoogle) -> None:
    q = _consent(env, google)
    url = f"/v1/integrations/google/callback?state={q['state']}&code=good-code"
    assert env.alice.client.get(url).status_code == 200
    again = env.alice.client.get(url)
    assert again.status_code == 422 and again.get_json()["error"]["code"] == "invalid_state"


def test_an_expired_state_is_refused(env: Env, google: FakeGoogle) -> None:
    q = _consent(env, google)
    env.p.clock.advance(11 * 60)
    r = env.alice.client.get(f"/v1/integrations/google/callback?state={q['state']}&code=good-code")
    assert r.status_code == 422 and r.get_json()["error"]["code"] == "expired_state"
    assert google.forms == [], "no code exchange for an expired flow"


def test_a_wrong_code_is_refused_by_google_and_nothing_is_stored(env: Env, google: FakeGoogle) -> None:
    q = _consent(env, google)
    r = env.alice.client.get(f"/v1/integrations/google/callback?state={q['state']}&code=forged")
    assert r.status_code == 422 and r.get_json()["error"]["code"] == "oauth_refused"
    assert env.p.deps.store.query(Integration.collection).items == []


def test_consent_denied_at_google_is_a_clear_error(env: Env, google: FakeGoogle) -> None:
    q = _consent(env, google)
    r = env.alice.client.get(f"/v1/integrations/google/callback?state={q['state']}&error=access_denied")
    assert r.status_code == 400 and "access_denied" in r.get_json()["error"]["message"]


def test_a_consent_that_withholds_a_scope_is_refused(env: Env, google: FakeGoogle) -> None:
    q = _consent(env, google, ["drive", "gmail"])
    google.answer = (200, {"refresh_token": "rt", "scope": DRIVE_SCOPES, "id_token": _id_token("a@example.com")})
    r = env.alice.client.get(f"/v1/integrations/google/callback?state={q['state']}&code=good-code")
    assert r.status_code == 422 and r.get_json()["error"]["code"] == "scopes_not_granted"


def test_without_a_configured_client_connecting_answers_not_configured(tmp_path: Path, keys: Keys) -> None:
    e = build_env(tmp_path, keys)
    r = e.alice.post("/v1/integrations/google", {"features": ["gmail"]})
    assert r.status_code == 501 and r.get_json()["error"]["code"] == "not_configured"
