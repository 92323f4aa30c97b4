"""Bearer-token authentication: OIDC ID/access tokens verified with PyJWT.

Each configured issuer names its ``iss``, the audience our tokens must carry
and its JWKS URL. A token is matched to its issuer by its (unverified) ``iss``
claim only to pick the keys; then signature, issuer, audience, expiry and
not-before are all verified. JWKS documents are cached for ``jwks_ttl_s``;
a token signed with a key id the cache does not know refreshes it early, at
most once a minute per issuer (key rotation without a stampede).

A user is the pair (issuer, ``sub``): two issuers may both have an "alice".
Records carry the owner id :func:`owner_id` (a hash of the two), so a token
from one trusted issuer never reaches another issuer's user's records.
Records stored before owner ids were qualified carry the bare ``sub``; they
belong to that subject *of the legacy issuer* (``SLUICE_API_LEGACY_ISSUER``,
by default the first configured issuer) and to no one else
(:attr:`Identity.owners`). The local development identity owns records as its
bare name, like the CLI's ``local``.
"""

from __future__ import annotations

import hashlib
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


OWNER_PREFIX = "u1_"


def owner_id(issuer: str, sub: str) -> str:
    """The stable owner id of the user ``sub`` of ``issuer``."""
    digest = hashlib.sha256(f"{issuer}\x00{sub}".encode()).hexdigest()[:40]
    return OWNER_PREFIX + digest


def is_qualified(owner: str) -> bool:
    rest = owner.removeprefix(OWNER_PREFIX)
    return rest != owner and len(rest) == 40 and all(c in "0123456789abcdef" for c in rest)


@dataclass(frozen=True)
class Identity:
    sub: str
    issuer: str
    email: str | None = None
    development: bool = False
    # This user's issuer is the legacy issuer: records stored under the bare
    # ``sub`` (before owner ids were qualified) are this user's too.
    legacy: bool = False
    # The token's ``roles`` claim (Entra ID app roles; a Firebase custom claim of that name).
    roles: frozenset[str] = frozenset()

    @property
    def owner(self) -> str:
        """The owner id of every record this user makes."""
        return self.sub if self.development else owner_id(self.issuer, self.sub)

    @property
    def owners(self) -> tuple[str, ...]:
        """Every owner id whose records are this user's, :attr:`owner` first.

        A bare ``sub`` that looks like a qualified id is never an alias, so no
        issuer can name its user after another issuer's user's owner id.
        """
        if self.legacy and not self.development and not is_qualified(self.sub):
            return (self.owner, self.sub)
        return (self.owner,)


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
        legacy_issuer: str | None = None,
    ) -> None:
        """``legacy_issuer``: whose users own the records stored under a bare
        subject (by default the first of ``issuers``)."""
        self._issuers: dict[str, IssuerConfig] = {}
        for cfg in issuers:
            for name in (cfg.issuer, *cfg.aliases):
                self._issuers[name] = cfg
        self._keysets = {cfg.jwks_url: _KeySet(cfg.jwks_url, fetcher, jwks_ttl_s, now) for cfg in issuers}
        self._leeway = leeway_s
        self._legacy = legacy_issuer if legacy_issuer is not None else (issuers[0].issuer if issuers else None)
        if self._legacy is not None and self._legacy in self._issuers:
            self._legacy = self._issuers[self._legacy].issuer  # an alias names its issuer

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
        roles = claims.get("roles")
        return Identity(
            sub=sub,
            issuer=cfg.issuer,
            email=email if isinstance(email, str) else None,
            legacy=cfg.issuer == self._legacy,
            roles=frozenset(r for r in roles if isinstance(r, str)) if isinstance(roles, list) else frozenset(),
        )


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
