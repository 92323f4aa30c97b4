"""The job API on the embedded backend: a Flask test client over the app that
the composition root's dependencies build, with a manual clock, and real
RS256 tokens verified against a test JWKS (injected fetcher, no network)."""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from common.api.app import create_app
from common.api.auth import BearerAuthenticator, OidcVerifier
from common.api.settings import ApiSettings, IssuerConfig
from tests.support import Pipeline, make_pipeline

ISSUER = "https://issuer.test"
AUDIENCE = "sluice-test"
JWKS_URL = "https://issuer.test/.well-known/jwks.json"


@dataclass
class Keys:
    private: rsa.RSAPrivateKey
    kid: str
    jwks: dict[str, Any]
    fetches: int = 0

    def fetch(self, url: str) -> dict[str, Any]:
        assert url == JWKS_URL
        self.fetches += 1
        return self.jwks


def make_keys(kid: str = "k1") -> Keys:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = jwt.algorithms.RSAAlgorithm.to_jwk(private.public_key(), as_dict=True)
    jwk.update({"kid": kid, "use": "sig", "alg": "RS256"})
    return Keys(private=private, kid=kid, jwks={"keys": [jwk]})


@pytest.fixture(scope="session")
def keys() -> Keys:
    return make_keys()


def mint(keys: Keys, sub: str | None, **claims: Any) -> str:
    now = int(time.time())
    payload: dict[str, Any] = {"iss": ISSUER, "aud": AUDIENCE, "sub": sub, "iat": now, "exp": now + 600}
    payload.update(claims)
    payload = {k: v for k, v in payload.items() if v is not None}
    return jwt.encode(payload, keys.private, algorithm="RS256", headers={"kid": keys.kid})


@dataclass
class User:
    client: FlaskClient
    token: str
    sub: str

    def _h(self, headers: dict[str, str] | None) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}", **(headers or {})}

    def get(self, url: str, **kw: Any) -> TestResponse:
        return self.client.get(url, headers=self._h(kw.pop("headers", None)), **kw)

    def post(self, url: str, json: Any = None, **kw: Any) -> TestResponse:
        return self.client.post(url, json=json, headers=self._h(kw.pop("headers", None)), **kw)

    def patch(self, url: str, json: Any = None, **kw: Any) -> TestResponse:
        return self.client.patch(url, json=json, headers=self._h(kw.pop("headers", None)), **kw)

    def delete(self, url: str, **kw: Any) -> TestResponse:
        return self.client.delete(url, headers=self._h(kw.pop("headers", None)), **kw)

    def upload(self, job_id: str, *files: tuple[str, bytes], **kw: Any) -> TestResponse:
        data = {"file": [(io.BytesIO(content), name) for name, content in files]}
        return self.client.post(
            f"/v1/jobs/{job_id}/files",
            data=data,
            content_type="multipart/form-data",
            headers=self._h(kw.pop("headers", None)),
        )

    def job(self, name: str = "invoices", **body: Any) -> dict[str, Any]:
        r = self.post("/v1/jobs", {"name": name, "preset": "invoice", "exports": [{"format": "csv"}], **body})
        assert r.status_code == 201, r.get_json()
        data: dict[str, Any] = r.get_json()
        return data


@dataclass
class Env:
    p: Pipeline
    app: Flask
    keys: Keys
    settings: ApiSettings
    alice: User = field(init=False)
    bob: User = field(init=False)

    def __post_init__(self) -> None:
        self.alice = self.user("alice")
        self.bob = self.user("bob")

    def user(self, sub: str) -> User:
        return User(self.app.test_client(), mint(self.keys, sub), sub)

    def drain(self, **kw: Any) -> int:
        return self.p.drain(**kw)


def build_env(
    tmp: Path,
    keys: Keys,
    *,
    durable: bool = False,
    pipeline: Pipeline | dict[str, Any] | None = None,
    **settings: Any,
) -> Env:
    # A pipeline built by the caller, or make_pipeline's keyword arguments.
    p = pipeline if isinstance(pipeline, Pipeline) else make_pipeline(tmp, durable=durable, **(pipeline or {}))
    cfg = ApiSettings(**{"rate_limit_rpm": 0, **settings})
    verifier = OidcVerifier(
        [IssuerConfig(issuer=ISSUER, audience=AUDIENCE, jwks_url=JWKS_URL)], fetcher=keys.fetch, leeway_s=0
    )
    app = create_app(p.deps, cfg, authenticator=BearerAuthenticator(verifier), sender=p.sender, sleep=lambda _s: None)
    return Env(p=p, app=app, keys=keys, settings=cfg)


@pytest.fixture
def env(tmp_path: Path, keys: Keys) -> Iterator[Env]:
    yield build_env(tmp_path, keys)


@pytest.fixture
def durable_env(tmp_path: Path, keys: Keys) -> Iterator[Env]:
    """Commits fsync'ed like ``sluice serve``: the served, concurrent tests' backend."""
    yield build_env(tmp_path, keys, durable=True)


def pdf(name: str) -> tuple[str, bytes]:
    return name, f"%PDF-1.4 {name}".encode()
