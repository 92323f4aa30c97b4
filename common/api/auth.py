"""Bearer-token authentication: OIDC ID/access tokens verified with PyJWT.

Each configured issuer names its ``iss``, the audience our tokens must carry
and its JWKS URL. A token is matched to its issuer by its (unverified) ``iss``
claim only to pick the keys; then signature, issuer, audience, expiry and
not-before are all verified. JWKS documents are cached for ``jwks_ttl_s``;
a token signed with a key id the cache does not know refreshes it early, at
most once a minute per issuer (key rotation without a stampede).

The caller's identity is the token's ``sub``; it owns every record it makes.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import jwt

from common.api.errors import ApiError
from common.api.settings import IssuerConfig

log = logging.getLogger("sluice.api.auth")

JwksFetcher = Callable[[str], dict[str, Any]]
_MIN_REFRESH_S = 60.0


@dataclass(frozen=True)
class Identity:
    sub: str
    issuer: str
    email: str | None = None
    development: bool = False


class Authenticator(Protocol):
    def authenticate(self, authorization: str | None) -> Identity:
        """The caller of a request with this ``Authorization`` header (ApiError 401 if none)."""
        ...


def fetch_jwks(url: str) -> dict[str, Any]:
    """GET a JWKS document (JSON). Bounded by a short timeout."""
    req = urllib.request.Request(url, headers={"Accept": "application/json"})
    with urllib.request.urlopen(req, timeout=5) as resp:
        data: dict[str, Any] = json.loads(resp.read())
    return data


def unauthorized(message: str) -> ApiError:
    return ApiError(401, "unauthenticated", message, headers={"WWW-Authenticate": 'Bearer realm="sluice"'})


class _KeySet:
    def __init__(self, url: str, fetcher: JwksFetcher, ttl_s: float, now: Callable[[], float]) -> None:
        self._url = url
        self._fetch = fetcher
        self._ttl = ttl_s
        self._now = now
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at = float("-inf")
        self._lock = threading.Lock()

    def _refresh(self) -> None:
        doc = self._fetch(self._url)
        keys: dict[str, jwt.PyJWK] = {}
        for raw in doc.get("keys", []):
            try:
                key = jwt.PyJWK(raw)
            except jwt.PyJWTError:
                continue  # an algorithm or key type we do not use
            keys[str(raw.get("kid", ""))] = key
        self._keys = keys
        self._fetched_at = self._now()

    def key(self, kid: str) -> jwt.PyJWK | None:
        with self._lock:
            age = self._now() - self._fetched_at
            if age > self._ttl or (kid not in self._keys and age > _MIN_REFRESH_S):
                try:
                    self._refresh()
                except Exception as exc:
                    log.warning("JWKS fetch failed", extra={"fields": {"url": self._url, "error": repr(exc)}})
                    if not self._keys:
                        raise ApiError(503, "auth_unavailable", "the token issuer's keys cannot be fetched") from exc
            return self._keys.get(kid)


class OidcVerifier:
    def __init__(
        self,
        issuers: Sequence[IssuerConfig],
        *,
        fetcher: JwksFetcher = fetch_jwks,
        jwks_ttl_s: float = 3600.0,
        leeway_s: int = 30,
        now: Callable[[], float] = time.monotonic,
    ) -> None:
        self._issuers: dict[str, IssuerConfig] = {}
        for cfg in issuers:
            for name in (cfg.issuer, *cfg.aliases):
                self._issuers[name] = cfg
        self._keysets = {cfg.jwks_url: _KeySet(cfg.jwks_url, fetcher, jwks_ttl_s, now) for cfg in issuers}
        self._leeway = leeway_s

    def verify(self, token: str) -> Identity:
        try:
            header = jwt.get_unverified_header(token)
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError as exc:
            raise unauthorized("the bearer token is not a JWT") from exc
        iss = unverified.get("iss")
        cfg = self._issuers.get(iss) if isinstance(iss, str) else None
        if cfg is None:
            raise unauthorized("the token's issuer is not trusted")
        alg = header.get("alg")
        if alg not in cfg.algorithms:
            raise unauthorized(f"the token's algorithm {alg!r} is not accepted")
        key = self._keysets[cfg.jwks_url].key(str(header.get("kid", "")))
        if key is None:
            raise unauthorized("the token was signed with an unknown key")
        try:
            claims = jwt.decode(
                token,
                key=key,
                algorithms=list(cfg.algorithms),
                audience=cfg.audience,
                issuer=[cfg.issuer, *cfg.aliases],
                leeway=self._leeway,
                options={"require": ["exp", "iss", "aud", "sub"]},
            )
        except jwt.ExpiredSignatureError as exc:
            raise unauthorized("the token has expired") from exc
        except jwt.InvalidAudienceError as exc:
            raise unauthorized("the token is for another audience") from exc
        except jwt.InvalidIssuerError as exc:
            raise unauthorized("the token's issuer is not trusted") from exc
        except jwt.InvalidSignatureError as exc:
            raise unauthorized("the token's signature is invalid") from exc
        except jwt.PyJWTError as exc:
            raise unauthorized(f"the token is invalid: {exc}") from exc
        sub = claims.get("sub")
        if not isinstance(sub, str) or not sub:
            raise unauthorized("the token has no subject")
        email = claims.get("email")
        return Identity(sub=sub, issuer=cfg.issuer, email=email if isinstance(email, str) else None)


class BearerAuthenticator:
    """Bearer tokens verified by ``verifier``; with ``dev_identity``, requests
    without a token are that user (embedded backend, explicitly configured)."""

    def __init__(self, verifier: OidcVerifier | None, *, dev_identity: str | None = None) -> None:
        self._verifier = verifier
        self._dev = dev_identity

    def authenticate(self, authorization: str | None) -> Identity:
        if not authorization:
            if self._dev is not None:
                return Identity(sub=self._dev, issuer="sluice-dev", development=True)
            raise unauthorized("a bearer token is required (Authorization: Bearer <token>)")
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise unauthorized("the Authorization header must be 'Bearer <token>'")
        if self._verifier is None:
            raise unauthorized("no token issuer is configured; this server accepts no tokens")
        return self._verifier.verify(token.strip())
