"""Connecting a Google account: OAuth 2.0 authorization code flow with PKCE.

``start`` records a one-shot flow (owner, scopes, PKCE verifier) under the
hash of a random ``state`` and returns Google's consent URL. Google sends the
browser back to the callback with ``code`` and ``state``; the callback is not
authenticated (it is a browser redirect), so the owner comes from the flow
record, which only the holder of ``state`` can name and which is deleted on
first use. ``complete`` exchanges the code at the token endpoint (with the
verifier), reads the account from the ``id_token`` Google returned on that
TLS call (OpenID Connect allows trusting it without a signature check there),
and stores the refresh token encrypted through ``integrations.connect``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any, ClassVar

from common.core.errors import ConfigError, ErrorKind, PermanentError, RetryableError
from common.core.models import Record, Timestamp
from common.ports.google import DRIVE_FILE, DRIVE_READONLY, GMAIL_READONLY, GMAIL_SEND
from common.ports.store import Transaction
from common.service import integrations, repo
from common.service.context import Deps

FLOW_TTL = timedelta(minutes=10)
IDENTITY_SCOPES = ("openid", "email")
# What each Sluice feature needs; a user grants only what they use.
SCOPE_SETS: dict[str, tuple[str, ...]] = {
    "drive": (DRIVE_READONLY, DRIVE_FILE),
    "gmail": (GMAIL_READONLY, GMAIL_SEND),
}

# (url, form) -> (HTTP status, JSON body)
TokenPoster = Callable[[str, dict[str, str]], tuple[int, dict[str, Any]]]


class OAuthFlow(Record):
    """A consent in progress; deleted when the callback uses it."""

    collection: ClassVar[str] = "oauth_flows"

    scopes: list[str]
    code_verifier: str
    redirect_uri: str
    expires_at: Timestamp


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _flow_id(state: str) -> str:
    return "oauth_" + hashlib.sha256(state.encode()).hexdigest()[:40]


def redirect_uri(deps: Deps) -> str:
    return (
        deps.settings.google_redirect_uri
        or f"{deps.settings.local_api_url.rstrip('/')}/v1/integrations/google/callback"
    )


def scopes_for(features: Sequence[str]) -> list[str]:
    unknown = [f for f in features if f not in SCOPE_SETS]
    if unknown or not features:
        raise PermanentError(
            f"unknown Google features {unknown}; choose from {sorted(SCOPE_SETS)}" if unknown else "name a feature",
            code="invalid_scopes",
        )
    return sorted({scope for f in features for scope in SCOPE_SETS[f]})


def start(deps: Deps, *, owner: str, features: Sequence[str]) -> tuple[str, OAuthFlow]:
    """Record a flow and return Google's consent URL for it."""
    client_id = deps.settings.google_client_id
    if not client_id or deps.settings.google_client_secret is None:
        raise ConfigError(
            "Google sign-in is not configured on this deployment",
            hint="Set SLUICE_GOOGLE_CLIENT_ID and SLUICE_GOOGLE_CLIENT_SECRET.",
        )
    scopes = scopes_for(features)
    state = secrets.token_urlsafe(32)
    verifier = secrets.token_urlsafe(64)
    now = deps.clock.now()
    flow = OAuthFlow(
        id=_flow_id(state),
        owner=owner,
        scopes=scopes,
        code_verifier=verifier,
        redirect_uri=redirect_uri(deps),
        expires_at=now + FLOW_TTL,
        created_at=now,
        updated_at=now,
    )
    repo.create(deps.store, flow)
    query = urllib.parse.urlencode(
        {
            "client_id": client_id,
            "redirect_uri": flow.redirect_uri,
            "response_type": "code",
            "scope": " ".join((*IDENTITY_SCOPES, *scopes)),
            "access_type": "offline",  # a refresh token
            "prompt": "consent",  # a refresh token even when consent was given before
            "include_granted_scopes": "true",
            "state": state,
            "code_challenge": _b64url(hashlib.sha256(verifier.encode()).digest()),
            "code_challenge_method": "S256",
        }
    )
    return f"{deps.settings.google_auth_uri}?{query}", flow


def _take(deps: Deps, state: str) -> OAuthFlow:
    """The flow ``state`` names, deleted in the same transaction (one use only)."""

    def tx(t: Transaction) -> OAuthFlow | None:
        flow = repo.tx_get(t, OAuthFlow, _flow_id(state))
        if flow is not None:
            t.delete(OAuthFlow.collection, flow.id)
        return flow

    flow = deps.store.transaction(tx)
    if flow is None:
        raise PermanentError(
            "this sign-in link is unknown or was already used", code="invalid_state", hint="Start connecting again."
        )
    if flow.expires_at < deps.clock.now():
        raise PermanentError("this sign-in link has expired", code="expired_state", hint="Start connecting again.")
    return flow


def complete(deps: Deps, *, state: str, code: str, post: TokenPoster | None = None) -> integrations.IntegrationInfo:
    flow = _take(deps, state)
    settings = deps.settings
    assert settings.google_client_id is not None and settings.google_client_secret is not None
    status, body = (post or post_form)(
        settings.google_token_uri,
        {
            "code": code,
            "client_id": settings.google_client_id,
            "client_secret": settings.google_client_secret.get_secret_value(),
            "redirect_uri": flow.redirect_uri,
            "grant_type": "authorization_code",
            "code_verifier": flow.code_verifier,
        },
    )
    if status >= 500:
        raise RetryableError(f"Google's token endpoint failed ({status})", kind=ErrorKind.UNAVAILABLE)
    if status != 200:
        raise PermanentError(
            f"Google refused the sign-in: {body.get('error')}: {body.get('error_description', '')}".strip(),
            code="oauth_refused",
            hint="Start connecting again.",
        )
    refresh_token = body.get("refresh_token")
    if not isinstance(refresh_token, str) or not refresh_token:
        raise PermanentError(
            "Google returned no refresh token",
            code="no_refresh_token",
            hint="Remove Sluice's access in your Google account settings, then connect again.",
        )
    account = _email(body.get("id_token"))
    granted = [s for s in str(body.get("scope", "")).split() if s.startswith("https://")]
    missing = sorted(set(flow.scopes) - set(granted))
    if missing:
        raise PermanentError(
            f"the consent did not grant {', '.join(missing)}", code="scopes_not_granted", hint="Allow every permission."
        )
    return integrations.connect(deps, owner=flow.owner, account=account, refresh_token=refresh_token, scopes=granted)


def _email(id_token: object) -> str:
    try:
        payload = str(id_token).split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError) as exc:
        raise PermanentError("Google's answer had no readable id_token", code="oauth_refused") from exc
    email = claims.get("email")
    if not isinstance(email, str) or claims.get("email_verified") is False:
        raise PermanentError("the Google account has no verified e-mail address", code="oauth_refused")
    return email


def post_form(url: str, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
    data = urllib.parse.urlencode(form).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/x-www-form-urlencoded"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return int(response.status), json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as err:
        try:
            return int(err.code), json.loads(err.read() or b"{}")
        except ValueError:
            return int(err.code), {}
    except OSError as err:
        raise RetryableError(f"Google's token endpoint is unreachable: {err}", kind=ErrorKind.NETWORK) from err
