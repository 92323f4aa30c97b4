"""Per-user Google OAuth: the GoogleOAuth adapter and the integrations service.

The token endpoint is a local fake (tests/fakes/google_oauth.py); API calls
go through the real google-api-python-client (static Drive discovery
document) over ``HttpMockSequence``, so the adapter is exercised exactly at
the HTTP boundary. Time is a ManualClock.
"""

from __future__ import annotations

import os
import sqlite3
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from googleapiclient.discovery import build
from googleapiclient.errors import HttpError
from googleapiclient.http import HttpMockSequence

from common.adapters.google import GoogleOAuth, TokenCipher, TokenDecryptError, load_or_create_key
from common.adapters.local.clock import ManualClock
from common.bootstrap import bootstrap
from common.config import Settings
from common.core.errors import ConfigError, ErrorKind, ReconnectRequired, RetryableError
from common.core.models import Integration, IntegrationStatus
from common.ports.google import DRIVE_READONLY, GMAIL_READONLY
from common.service import integrations, repo
from common.service.context import Deps
from tests.fakes.google_oauth import CLIENT_ID, CLIENT_SECRET, FakeTokenServer, plain_http, with_google

KEY = bytes(range(32))
OWNER = "alice"
ACCOUNT = "alice@example.com"
REFRESH_TOKEN = "1//refresh-token-of-alice"
DRIVE_FILE_JSON = b'{"id": "f1", "name": "a.pdf", "mimeType": "application/pdf"}'


@pytest.fixture
def oauth() -> Iterator[FakeTokenServer]:
    with FakeTokenServer() as fake:
        fake.grant(REFRESH_TOKEN, [DRIVE_READONLY, GMAIL_READONLY])
        yield fake


class Setup:
    def __init__(self, tmp: Path, oauth: FakeTokenServer) -> None:
        self.clock = ManualClock()
        base = bootstrap(Settings(backend="local", data_dir=tmp / "data", durable=False), clock=self.clock)
        self.api: list[HttpMockSequence] = []
        self.auth = GoogleOAuth(
            base.store,
            self.clock,
            key=KEY,
            client_id=CLIENT_ID,
            client_secret=CLIENT_SECRET,
            token_uri=oauth.token_uri,
            transport=self._next_api_transport,
            token_transport=plain_http,
        )
        self.deps: Deps = with_google(base, self.auth)
        self.replies: list[list[tuple[dict[str, str], bytes]]] = []
        self.data = tmp / "data"

    def _next_api_transport(self) -> HttpMockSequence:
        http = HttpMockSequence(self.replies.pop(0))
        self.api.append(http)
        return http

    def connect(self, scopes: list[str] | None = None) -> integrations.IntegrationInfo:
        return integrations.connect(
            self.deps, owner=OWNER, account=ACCOUNT, refresh_token=REFRESH_TOKEN, scopes=scopes or [DRIVE_READONLY]
        )

    def integration(self) -> Integration:
        return repo.require(self.deps.store, Integration, integrations.integration_id(OWNER, ACCOUNT))[0]

    def get_file(self, *replies: tuple[dict[str, str], bytes]) -> Any:
        """files.get through the real client, with the user's authorized http over scripted replies."""
        self.replies.append(list(replies))
        http = self.auth.authorized_http(OWNER, [DRIVE_READONLY])
        drive = build("drive", "v3", http=http, static_discovery=True, cache_discovery=False)
        return drive.files().get(fileId="f1", fields="id,name,mimeType").execute()

    def bearer(self, transport: int, request: int) -> str:
        headers = self.api[transport].request_sequence[request][3]
        return str(headers["authorization"])


@pytest.fixture
def setup(tmp_path: Path, oauth: FakeTokenServer) -> Setup:
    return Setup(tmp_path, oauth)


def ok(body: bytes = DRIVE_FILE_JSON) -> tuple[dict[str, str], bytes]:
    return {"status": "200", "content-type": "application/json"}, body


def unauthorized() -> tuple[dict[str, str], bytes]:
    return {"status": "401"}, b'{"error": {"code": 401, "message": "Request had invalid authentication credentials."}}'


def test_refresh_token_is_encrypted_at_rest_and_a_wrong_key_cannot_open_it(setup: Setup) -> None:
    info = setup.connect()
    assert "token" not in info.model_dump_json()  # the API's view carries no secret
    stored = setup.integration()
    assert stored.token_ciphertext is not None and REFRESH_TOKEN not in stored.token_ciphertext
    with sqlite3.connect(setup.data / "state.db") as db:
        dump = "\n".join(db.iterdump())
    assert REFRESH_TOKEN not in dump
    context = f"google\x00{OWNER}\x00{ACCOUNT}"
    assert TokenCipher(KEY).open(stored.token_ciphertext, context=context) == REFRESH_TOKEN
    with pytest.raises(TokenDecryptError, match="sealed with key"):
        TokenCipher(bytes(32)).open(stored.token_ciphertext, context=context)
    with pytest.raises(TokenDecryptError, match="does not decrypt"):  # bound to its owner and account
        TokenCipher(KEY).open(stored.token_ciphertext, context=f"google\x00mallory\x00{ACCOUNT}")


def test_local_key_file_is_created_once_with_mode_0600_and_refused_if_readable(tmp_path: Path) -> None:
    path = tmp_path / "data" / "token.key"
    key = load_or_create_key(path)
    assert len(key) == 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create_key(path) == key
    os.chmod(path, 0o644)
    with pytest.raises(ConfigError, match="readable by other users"):
        load_or_create_key(path)


def test_requests_carry_a_cached_access_token_refreshed_when_expired(setup: Setup, oauth: FakeTokenServer) -> None:
    setup.connect()
    assert setup.get_file(ok())["name"] == "a.pdf"
    assert setup.get_file(ok())["name"] == "a.pdf"
    assert oauth.refreshes == 1  # one access token serves both requests
    assert setup.bearer(0, 0) == setup.bearer(1, 0)
    assert oauth.requests[0].scopes == [DRIVE_READONLY]  # only the scope this use asked for
    setup.clock.advance(3600)
    setup.get_file(ok())
    assert oauth.refreshes == 2
    assert setup.bearer(2, 0) != setup.bearer(0, 0)


def test_401_refreshes_once_and_retries_once(setup: Setup, oauth: FakeTokenServer) -> None:
    setup.connect()
    assert setup.get_file(unauthorized(), ok())["id"] == "f1"
    assert oauth.refreshes == 2
    assert setup.bearer(0, 0) != setup.bearer(0, 1)
    with pytest.raises(HttpError) as caught:  # a second 401 is not retried again
        setup.get_file(unauthorized(), unauthorized())
    assert caught.value.status_code == 401
    assert oauth.refreshes == 3


def test_revoked_grant_marks_the_integration_reconnect_required(setup: Setup, oauth: FakeTokenServer) -> None:
    setup.connect()
    oauth.revoke(REFRESH_TOKEN)
    with pytest.raises(ReconnectRequired, match="expired or revoked") as caught:
        setup.get_file(ok())
    assert caught.value.kind is ErrorKind.AUTH
    stored = setup.integration()
    assert stored.status is IntegrationStatus.RECONNECT_REQUIRED
    assert stored.refresh_failures == 1
    assert stored.status_reason is not None and "expired or revoked" in stored.status_reason
    with pytest.raises(ReconnectRequired):  # known broken: no further call to Google
        setup.auth.authorized_http(OWNER, [DRIVE_READONLY])
    assert oauth.refreshes == 1
    # Reconnecting (a new grant) makes it usable again.
    oauth.grant("1//new-token", [DRIVE_READONLY])
    integrations.connect(
        setup.deps, owner=OWNER, account=ACCOUNT, refresh_token="1//new-token", scopes=[DRIVE_READONLY]
    )
    assert setup.integration().status is IntegrationStatus.CONNECTED
    assert setup.integration().refresh_failures == 0
    assert setup.get_file(ok())["id"] == "f1"


def test_a_scope_not_granted_asks_to_reconnect_naming_it(setup: Setup, oauth: FakeTokenServer) -> None:
    setup.connect(scopes=[GMAIL_READONLY])
    with pytest.raises(ReconnectRequired, match=r"drive\.readonly") as caught:
        setup.auth.authorized_http(OWNER, [DRIVE_READONLY])
    assert "drive.readonly" in caught.value.hint
    assert oauth.refreshes == 0
    assert setup.integration().status is IntegrationStatus.CONNECTED  # still fine for Gmail


def test_token_endpoint_outage_is_retryable_with_its_delay(setup: Setup, oauth: FakeTokenServer) -> None:
    setup.connect()
    oauth.script.append((503, {"error": "temporarily_unavailable"}, {"retry-after": "12"}))
    with pytest.raises(RetryableError) as caught:
        setup.get_file(ok())
    assert caught.value.kind is ErrorKind.UNAVAILABLE and caught.value.retry_after == 12
    assert setup.integration().status is IntegrationStatus.CONNECTED


def test_status_and_disconnect(setup: Setup) -> None:
    setup.connect()
    [info] = integrations.status(setup.deps, owner=OWNER)
    assert (info.account, info.status, info.scopes) == (ACCOUNT, IntegrationStatus.CONNECTED, [DRIVE_READONLY])
    integrations.disconnect(setup.deps, owner=OWNER, account=ACCOUNT.upper())
    assert setup.integration().token_ciphertext is None
    assert integrations.status(setup.deps, owner=OWNER)[0].status is IntegrationStatus.DISCONNECTED
    with pytest.raises(ReconnectRequired, match="no connected Google account"):
        setup.auth.authorized_http(OWNER, [DRIVE_READONLY])
