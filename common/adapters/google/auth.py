"""Per-user Google OAuth: the :class:`common.ports.google.GoogleAuth` adapter.

Each user's refresh token lives on their ``Integration`` record, sealed with
:class:`common.adapters.google.crypto.TokenCipher`. :meth:`GoogleOAuth.authorized_http`
returns an httplib2-compatible object for the Google API client that

* adds an access token for exactly the scopes asked for (refreshing it when
  it is missing or about to expire; access tokens are cached in memory per
  process, never stored);
* on a 401 refreshes once and retries the request once;
* when the refresh is refused with ``invalid_grant`` (revoked, expired,
  password changed) marks the integration ``reconnect_required`` -- reason
  kept, ``refresh_failures`` incremented -- and raises
  :class:`common.core.errors.ReconnectRequired`.

The token refresh is a plain form POST written here rather than
``google.oauth2.credentials.Credentials.refresh``: that one retries 5xx
answers itself, sleeping in between, which would hide failures from Sluice's
retry policy (the one place that decides on retries) and stall handlers.

Circuit breakers (``breakers``: a dependency's name to its breaker) guard the
token endpoint (``oauth_token``) and the Drive and Gmail APIs (``drive``,
``gmail``, told apart by the request's path): while one is open, a request
raises :class:`common.core.breaker.CircuitOpen` without being sent, and
answers of 5xx or transport failures count against it.

Both transports are injectable (factories, one transport per authorized
http, because ``httplib2.Http`` is not thread-safe): tests hand in
``googleapiclient.http.HttpMockSequence`` or point the token endpoint at a
local fake.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol
from urllib.parse import urlencode, urlsplit

import httplib2

from common.adapters.google.crypto import TokenCipher
from common.core.errors import ErrorKind, PermanentError, ReconnectRequired, RetryableError, SluiceError
from common.core.models import Integration, IntegrationStatus
from common.core.retry import parse_retry_after
from common.ports.breaker import CircuitBreaker
from common.ports.clock import Clock
from common.ports.google import DRIVE_FILE, DRIVE_READONLY, GMAIL_READONLY, GMAIL_SEND
from common.ports.store import Filter, Store, Transaction

log = logging.getLogger(__name__)

GOOGLE_TOKEN_URI = "https://oauth2.googleapis.com/token"
DRIVE = "https://www.googleapis.com/auth/drive"
GMAIL_MODIFY = "https://www.googleapis.com/auth/gmail.modify"
MAIL_GOOGLE = "https://mail.google.com/"

# A granted scope also satisfies the narrower ones it includes.
_IMPLIED: Mapping[str, frozenset[str]] = {
    DRIVE: frozenset({DRIVE_READONLY, DRIVE_FILE}),
    GMAIL_MODIFY: frozenset({GMAIL_READONLY}),
    MAIL_GOOGLE: frozenset({GMAIL_READONLY, GMAIL_SEND, GMAIL_MODIFY}),
}

# Refresh this long before Google's stated expiry, so a token does not lapse mid-request.
EXPIRY_SKEW = timedelta(seconds=60)


class Http(Protocol):
    """What the Google API client needs from a transport (``httplib2.Http``'s ``request``)."""

    def request(
        self,
        uri: str,
        method: str = "GET",
        body: Any = None,
        headers: Mapping[str, str] | None = None,
        redirections: int = ...,
        connection_type: Any = None,
    ) -> tuple[Any, bytes]: ...


def default_transport(timeout_s: float = 60.0) -> Callable[[], Http]:
    def make() -> Http:
        http: Http = httplib2.Http(timeout=timeout_s)
        return http

    return make


def missing_scopes(granted: Iterable[str], wanted: Iterable[str]) -> list[str]:
    """The wanted scopes that ``granted`` does not cover (a broad scope covers its narrower ones)."""
    covered = set(granted)
    for scope in list(covered):
        covered |= _IMPLIED.get(scope, frozenset())
    return sorted(set(wanted) - covered)


def token_context(owner: str, account: str) -> str:
    """The associated data a refresh token is sealed with: it only opens for this owner and account."""
    return f"google\x00{owner}\x00{account}"


@dataclass(frozen=True)
class _CachedToken:
    value: str
    expires_at: datetime


class GoogleOAuth:
    """The GoogleAuth adapter (see the module docstring)."""

    def __init__(
        self,
        store: Store,
        clock: Clock,
        *,
        key: bytes,
        client_id: str,
        client_secret: str,
        token_uri: str = GOOGLE_TOKEN_URI,
        transport: Callable[[], Http] | None = None,
        token_transport: Callable[[], Http] | None = None,
        breakers: Callable[[str], CircuitBreaker] | None = None,
    ) -> None:
        self._store = store
        self._clock = clock
        self._cipher = TokenCipher(key)
        self._client_id = client_id
        self._client_secret = client_secret
        self._token_uri = token_uri
        self._transport = transport or default_transport()
        self._token_transport = token_transport or default_transport(timeout_s=30.0)
        self._tokens: dict[tuple[str, str, tuple[str, ...]], _CachedToken] = {}
        self._breakers = breakers
        self._lock = threading.Lock()

    def __repr__(self) -> str:  # no secret in logs or tracebacks
        return f"GoogleOAuth(client_id={self._client_id!r}, token_uri={self._token_uri!r})"

    # -- sealing (used by the integrations service when a user connects) ----------

    def seal_refresh_token(self, refresh_token: str, *, owner: str, account: str) -> str:
        return self._cipher.seal(refresh_token, context=token_context(owner, account))

    # -- the port ---------------------------------------------------------------------

    def authorized_http(self, owner: str, scopes: Sequence[str], *, account: str | None = None) -> AuthorizedHttp:
        wanted = tuple(sorted(set(scopes)))
        integration = self._find(owner, wanted, account)
        return AuthorizedHttp(self._transport(), _TokenSource(self, integration, wanted), breakers=self._breakers)

    def _find(self, owner: str, scopes: tuple[str, ...], account: str | None) -> Integration:
        filters = [Filter("owner", "==", owner), Filter("provider", "==", "google")]
        if account is not None:
            filters.append(Filter("account", "==", account.strip().lower()))
        found = [Integration.from_doc(s.data) for s in self._store.query(Integration.collection, filters=filters).items]
        live = sorted(
            (i for i in found if i.status is not IntegrationStatus.DISCONNECTED and i.token_ciphertext),
            key=lambda i: i.account,
        )
        usable = [
            i
            for i in live
            if i.status in (IntegrationStatus.CONNECTED, IntegrationStatus.UNHEALTHY)
            and not missing_scopes(i.scopes, scopes)
        ]
        if usable:
            # Several accounts fit and none was named: the first by address, so the choice is stable.
            return usable[0]
        who = account or "any Google account"
        broken = [i for i in live if i.status is IntegrationStatus.RECONNECT_REQUIRED]
        if broken:
            i = broken[0]
            raise ReconnectRequired(f"Google account {i.account} needs reconnecting: {i.status_reason or 'unknown'}")
        if live:
            i = live[0]
            lacking = ", ".join(missing_scopes(i.scopes, scopes))
            raise ReconnectRequired(
                f"Google account {i.account} has not granted {lacking}",
                hint=f"Reconnect {i.account} and grant access to {lacking}.",
            )
        raise ReconnectRequired(
            f"{owner} has no connected Google account ({who})",
            hint=f"Connect a Google account in Sluice's integrations, granting {', '.join(scopes)}.",
        )

    # -- access tokens ----------------------------------------------------------------

    def _access_token(self, integration: Integration, scopes: tuple[str, ...], *, force: bool) -> str:
        assert integration.token_ciphertext is not None
        # The ciphertext is part of the key: a reconnect (new refresh token) starts afresh.
        key = (integration.id, integration.token_ciphertext, scopes)
        now = self._clock.now()
        with self._lock:
            cached = self._tokens.get(key)
            if cached is not None and not force and cached.expires_at - EXPIRY_SKEW > now:
                return cached.value
            self._tokens.pop(key, None)
        token = self._refresh(integration, scopes)
        with self._lock:
            # Forget lapsed tokens as new ones come (reconnected or idle users), so the cache stays small.
            for stale in [k for k, t in self._tokens.items() if t.expires_at <= now]:
                del self._tokens[stale]
            self._tokens[key] = token
        return token.value

    def _refresh(self, integration: Integration, scopes: tuple[str, ...]) -> _CachedToken:
        breaker = self._breakers(OAUTH_TOKEN) if self._breakers is not None else None
        if breaker is None:
            return self._refresh_once(integration, scopes)
        breaker.admit()
        try:
            token = self._refresh_once(integration, scopes)
        except SluiceError as err:
            breaker.record_failure(err)  # only the endpoint's own failures count (5xx, unreachable)
            raise
        breaker.record_success()
        return token

    def _refresh_once(self, integration: Integration, scopes: tuple[str, ...]) -> _CachedToken:
        assert integration.token_ciphertext is not None
        refresh_token = self._cipher.open(
            integration.token_ciphertext, context=token_context(integration.owner, integration.account)
        )
        body = urlencode(
            {
                "grant_type": "refresh_token",
                "refresh_token": refresh_token,
                "client_id": self._client_id,
                "client_secret": self._client_secret,
                # Ask for just what this use needs (least privilege per token).
                "scope": " ".join(scopes),
            }
        )
        started = self._clock.now()
        try:
            resp, content = self._token_transport().request(
                self._token_uri,
                "POST",
                body=body,
                headers={"content-type": "application/x-www-form-urlencoded", "accept": "application/json"},
            )
        except (OSError, httplib2.HttpLib2Error) as exc:
            raise RetryableError(f"Google's token endpoint is unreachable: {exc}", kind=ErrorKind.NETWORK) from exc
        status = int(resp.status)
        payload = _json_object(content)
        if status == 200 and isinstance(payload.get("access_token"), str):
            granted = payload.get("scope")
            if isinstance(granted, str):
                lacking = missing_scopes(granted.split(), scopes)
                if lacking:
                    raise ReconnectRequired(
                        f"Google account {integration.account} has not granted {', '.join(lacking)}",
                        hint=f"Reconnect {integration.account} and grant access to {', '.join(lacking)}.",
                    )
            expires_in = payload.get("expires_in")
            lifetime = float(expires_in) if isinstance(expires_in, int | float) else 3600.0
            return _CachedToken(str(payload["access_token"]), started + timedelta(seconds=lifetime))
        error = str(payload.get("error") or "")
        description = str(payload.get("error_description") or error or f"HTTP {status}")
        if error == "invalid_grant":
            reason = f"Google refused the stored authorization ({description})"
            self._mark_reconnect_required(integration, reason)
            raise ReconnectRequired(f"Google account {integration.account} needs reconnecting: {reason}")
        if error == "invalid_scope":
            raise ReconnectRequired(
                f"Google account {integration.account} has not granted {', '.join(scopes)} ({description})",
                hint=f"Reconnect {integration.account} and grant access to {', '.join(scopes)}.",
            )
        if error in ("invalid_client", "unauthorized_client"):
            raise PermanentError(
                f"Google rejected Sluice's OAuth client: {description}",
                kind=ErrorKind.AUTH,
                code="oauth_client_rejected",
                hint="Check the OAuth client id and secret Sluice is configured with.",
            )
        delay = parse_retry_after(resp.get("retry-after"), now=self._clock.now())
        if status == 429:
            raise RetryableError(
                f"token refresh rate-limited: {description}", kind=ErrorKind.RATE_LIMITED, retry_after=delay
            )
        if status == 503:
            raise RetryableError(
                f"token endpoint unavailable: {description}", kind=ErrorKind.UNAVAILABLE, retry_after=delay
            )
        if status >= 500:
            raise RetryableError(f"token endpoint failed: {description}", kind=ErrorKind.SERVER)
        raise PermanentError(
            f"token refresh failed: HTTP {status} {description}", kind=ErrorKind.AUTH, code="token_refresh"
        )

    def _mark_reconnect_required(self, integration: Integration, reason: str) -> None:
        now = self._clock.now()

        def tx(t: Transaction) -> None:
            snap = t.get(Integration.collection, integration.id)
            if snap is None:
                return
            current = Integration.from_doc(snap.data)
            # The user may have reconnected meanwhile: never mark a new token as broken.
            if current.token_ciphertext != integration.token_ciphertext:
                return
            if current.status is IntegrationStatus.DISCONNECTED:
                return
            updated = current.model_copy(
                update={
                    "status": IntegrationStatus.RECONNECT_REQUIRED,
                    "status_reason": reason,
                    "refresh_failures": current.refresh_failures + 1,
                    "updated_at": now,
                }
            )
            t.set(Integration.collection, updated.id, updated.to_doc())

        self._store.transaction(tx)
        with self._lock:
            for key in [k for k in self._tokens if k[0] == integration.id]:
                del self._tokens[key]
        log.warning(
            "Google authorization revoked; integration needs reconnecting",
            extra={"fields": {"integration_id": integration.id, "reason": reason}},
        )


class _TokenSource:
    """Access tokens for one integration and one scope set (what an AuthorizedHttp holds)."""

    def __init__(self, auth: GoogleOAuth, integration: Integration, scopes: tuple[str, ...]) -> None:
        self._auth = auth
        self._integration = integration
        self._scopes = scopes

    def token(self, *, force: bool = False) -> str:
        return self._auth._access_token(self._integration, self._scopes, force=force)


class AuthorizedHttp:
    """An httplib2-compatible http that authorizes every request for one user.

    A 401 answer triggers one refresh and one retry; a second 401 is returned
    as is (the API client raises it as an HttpError).
    """

    def __init__(
        self, transport: Http, tokens: _TokenSource, *, breakers: Callable[[str], CircuitBreaker] | None = None
    ) -> None:
        self._transport = transport
        self._tokens = tokens
        self._breakers = breakers

    def request(
        self,
        uri: str,
        method: str = "GET",
        body: Any = None,
        headers: Mapping[str, str] | None = None,
        redirections: int = httplib2.DEFAULT_MAX_REDIRECTS,
        connection_type: Any = None,
    ) -> tuple[Any, bytes]:
        dependency = api_of(uri)
        breaker = self._breakers(dependency) if self._breakers is not None and dependency is not None else None
        if breaker is None:
            return self._request(uri, method, body, headers, redirections, connection_type)
        breaker.admit()
        try:
            resp, content = self._request(uri, method, body, headers, redirections, connection_type)
        except (OSError, httplib2.HttpLib2Error) as exc:
            breaker.record_failure(RetryableError(f"{dependency} unreachable: {exc}", kind=ErrorKind.NETWORK))
            raise
        status = int(resp.status)
        if status >= 500:
            kind = ErrorKind.UNAVAILABLE if status == 503 else ErrorKind.SERVER
            breaker.record_failure(RetryableError(f"{dependency} answered {status}", kind=kind, code=f"http_{status}"))
        else:
            breaker.record_success()
        return resp, content

    def _request(
        self,
        uri: str,
        method: str,
        body: Any,
        headers: Mapping[str, str] | None,
        redirections: int,
        connection_type: Any,
    ) -> tuple[Any, bytes]:
        # A streamed body must be replayable for the retry after a 401.
        position = body.tell() if hasattr(body, "tell") and hasattr(body, "seek") else None
        resp, content = self._send(uri, method, body, headers, redirections, connection_type, force=False)
        if int(resp.status) != 401:
            return resp, content
        log.info("Google answered 401; refreshing the access token and retrying once")
        if position is not None:
            body.seek(position)
        return self._send(uri, method, body, headers, redirections, connection_type, force=True)

    def _send(
        self,
        uri: str,
        method: str,
        body: Any,
        headers: Mapping[str, str] | None,
        redirections: int,
        connection_type: Any,
        *,
        force: bool,
    ) -> tuple[Any, bytes]:
        sent = dict(headers or {})
        sent["authorization"] = f"Bearer {self._tokens.token(force=force)}"
        return self._transport.request(
            uri, method, body=body, headers=sent, redirections=redirections, connection_type=connection_type
        )


OAUTH_TOKEN = "oauth_token"


def api_of(uri: str) -> str | None:
    """Which guarded Google API a request goes to (``drive``, ``gmail``, ``sheets``), by its path or host.

    Covers the plain, upload (``/upload/drive/v3``) and batch (``/batch/gmail/v1``)
    endpoints on www.googleapis.com and the per-API hosts.
    """
    parts = urlsplit(uri)
    segments = parts.path.split("/")
    host = parts.hostname or ""
    for api in ("drive", "gmail", "sheets"):
        if api in segments[:3] or host.startswith(f"{api}."):
            return api
    return None


def _json_object(content: bytes) -> dict[str, Any]:
    try:
        payload = json.loads(content or b"{}")
    except ValueError:
        return {}
    return payload if isinstance(payload, dict) else {}
