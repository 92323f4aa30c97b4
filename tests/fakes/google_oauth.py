"""A fake Google OAuth token endpoint for tests of the GoogleOAuth adapter.

A threaded :mod:`http.server` on 127.0.0.1 (free port) answers
``POST /token`` with ``grant_type=refresh_token`` the way Google does: a
fresh access token for a known, unrevoked refresh token (downscoped to the
``scope`` asked for, refused with ``invalid_scope`` beyond the grant),
``400 invalid_grant`` for a revoked or unknown one, ``401 invalid_client``
for a wrong client. It records every request, and fake API servers ask it
whether a bearer token is valid (:meth:`FakeTokenServer.authorizes`).

    with FakeTokenServer() as oauth:
        oauth.grant("rt-alice", [DRIVE_READONLY])
        ... GoogleOAuth(..., token_uri=oauth.token_uri, token_transport=plain_http) ...
        oauth.revoke("rt-alice")          # the next refresh gets invalid_grant
        oauth.expire_access_tokens()      # issued tokens now get 401 from a fake API
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self
from urllib.parse import parse_qs

import httplib2

from common.bootstrap import with_google_auth
from common.ports.google import GoogleAuth
from common.service.context import Deps

CLIENT_ID = "sluice-test.apps.googleusercontent.com"
CLIENT_SECRET = "test-secret"


@dataclass
class _Grant:
    scopes: frozenset[str]
    revoked: bool = False


@dataclass(frozen=True)
class TokenRequest:
    form: dict[str, str]

    @property
    def scopes(self) -> list[str]:
        return self.form.get("scope", "").split()


@dataclass
class FakeTokenServer:
    client_id: str = CLIENT_ID
    client_secret: str = CLIENT_SECRET
    lifetime_s: int = 3600
    requests: list[TokenRequest] = field(default_factory=list)
    # Scripted answers for the next refreshes, before the normal logic: (status, body, headers).
    script: list[tuple[int, dict[str, Any], dict[str, str]]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._grants: dict[str, _Grant] = {}
        self._access: dict[str, frozenset[str]] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    # -- scripting ----------------------------------------------------------------------

    def grant(self, refresh_token: str, scopes: Iterable[str]) -> None:
        with self._lock:
            self._grants[refresh_token] = _Grant(frozenset(scopes))

    def revoke(self, refresh_token: str) -> None:
        with self._lock:
            self._grants[refresh_token].revoked = True

    def expire_access_tokens(self) -> None:
        """Every access token issued so far stops working (as after its expiry)."""
        with self._lock:
            self._access.clear()

    def authorizes(self, authorization: str | None, scope: str) -> bool:
        """Whether an ``Authorization`` header carries a live token for ``scope``."""
        if not authorization or not authorization.startswith("Bearer "):
            return False
        with self._lock:
            scopes = self._access.get(authorization.removeprefix("Bearer "))
        return scopes is not None and scope in scopes

    @property
    def refreshes(self) -> int:
        return len(self.requests)

    # -- server -------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        assert self._server is not None, "start the fake first (use it as a context manager)"
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def token_uri(self) -> str:
        return f"{self.base_url}/token"

    def __enter__(self) -> Self:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
                status, body, headers = fake._answer(self.path, form)
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                for k, v in headers.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.shutdown()
        self._server.server_close()

    def _answer(self, path: str, form: dict[str, str]) -> tuple[int, dict[str, Any], dict[str, str]]:
        if path != "/token":
            return 404, {"error": "not_found"}, {}
        with self._lock:
            self.requests.append(TokenRequest(form))
            if self.script:
                return self.script.pop(0)
            if form.get("client_id") != self.client_id or form.get("client_secret") != self.client_secret:
                return 401, {"error": "invalid_client", "error_description": "The OAuth client was not found."}, {}
            if form.get("grant_type") != "refresh_token":
                return 400, {"error": "unsupported_grant_type"}, {}
            grant = self._grants.get(form.get("refresh_token", ""))
            if grant is None or grant.revoked:
                return 400, {"error": "invalid_grant", "error_description": "Token has been expired or revoked."}, {}
            wanted = frozenset(form.get("scope", "").split()) or grant.scopes
            if not wanted <= grant.scopes:
                return 400, {"error": "invalid_scope", "error_description": "Some requested scopes were invalid."}, {}
            token = f"ya29.fake-{next(self._ids)}"
            self._access[token] = wanted
        body = {
            "access_token": token,
            "expires_in": self.lifetime_s,
            "scope": " ".join(sorted(wanted)),
            "token_type": "Bearer",
        }
        return 200, body, {}


def plain_http() -> httplib2.Http:
    """A transport for 127.0.0.1 fakes: no proxy from the environment."""
    return httplib2.Http(timeout=10, proxy_info=None)


def with_google(deps: Deps, auth: GoogleAuth) -> Deps:
    """A copy of ``deps`` with ``auth`` as its GoogleAuth (what the composition root does for a configured client)."""
    return with_google_auth(dataclasses.replace(deps), auth)
