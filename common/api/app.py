"""The job API as a Flask app: a route table, one request pipeline, JSON errors.

Every request goes through :meth:`Api.view`: authenticate (bearer token, or
the configured development identity), rate-limit per user, honour
``Idempotency-Key`` on POST, validate the query and body with the route's
pydantic models, call the handler, and serialise its result. Handlers are
plain functions over a :class:`~common.api.call.Call`, one module per resource
in :mod:`common.api.routes`.

``create_app(deps)`` builds it; ``functions/api/main.py`` and ``sluice serve``
both dispatch to the same app.
"""

from __future__ import annotations

import io
import json
import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from flask import Flask, Request, Response, g, request
from pydantic import BaseModel, ValidationError
from werkzeug.exceptions import HTTPException

from common.api import openapi
from common.api.auth import Authenticator, BearerAuthenticator, Identity, OidcVerifier, fetch_jwks
from common.api.call import Call, Result, Route, json_response, respond, stored
from common.api.errors import ApiError, from_sluice
from common.api.idempotency import Idempotency, Reservation, StoredResponse, fingerprint
from common.api.routes import ROUTES
from common.api.settings import ApiSettings
from common.core.errors import ConfigError, SluiceError
from common.core.leases import QuotaPlan
from common.obs import metrics
from common.service import leased_ratelimit
from common.service.context import Deps, Sender, TopologySender

log = logging.getLogger("sluice.api")


def error_response(err: ApiError) -> Response:
    return json_response(err.body(), err.status, err.headers)


def replay(found: StoredResponse) -> Response:
    return Response(
        found.body,
        status=found.status,
        mimetype=found.content_type or None,
        headers={**found.headers, "Idempotent-Replayed": "true"},
    )


def _is_json(mimetype: str) -> bool:
    return mimetype == "application/json" or (mimetype.startswith("application/") and mimetype.endswith("+json"))


def _validation_details(exc: ValidationError, where: str) -> dict[str, Any]:
    return {
        "in": where,
        "errors": [{"loc": [str(p) for p in e["loc"]], "msg": e["msg"], "type": e["type"]} for e in exc.errors()],
    }


class Api:
    def __init__(
        self,
        deps: Deps,
        settings: ApiSettings,
        authenticator: Authenticator,
        *,
        sender: Sender | None = None,
        sleep: Callable[[float], None] | None = None,
        routes: Sequence[Route] = (),
    ) -> None:
        self.deps = deps
        self.routes = tuple(routes)
        self.settings = settings
        self.auth = authenticator
        self.sender = sender or TopologySender(deps.topology, deps.settings, deps.publisher, deps.clock)
        self.idempotency = Idempotency(deps.store, deps.clock, ttl_s=settings.idempotency_ttl_s)
        self.sleep = sleep  # SSE polling; None: time.sleep
        # Per user, leased from shards of about a request a second each: single-token
        # leases still write a shard at most about once a second, and a request
        # is never refused while a shard holds a token.
        rpm = settings.rate_limit_rpm
        self._limit = QuotaPlan.with_burst(rpm, min_grant=1) if rpm > 0 else None

    # -- the request pipeline ---------------------------------------------------

    def view(self, route: Route) -> Callable[..., Response]:
        def handle(**params: str) -> Response:
            reservation: Reservation | None = None
            try:
                owners: tuple[str, ...] = ("",)
                operator = False
                if route.auth:
                    ident = self._authenticate()
                    owners = ident.owners
                    operator = ident.owner in self.settings.operators or self.settings.operator_role in ident.roles
                    self._rate_limit(owners[0])
                query = self._query(route)
                if route.method == "POST" and route.auth and (key := request.headers.get("Idempotency-Key")):
                    fp = fingerprint(route.method, request.path, self._fingerprint_body(route))
                    begun = self.idempotency.begin(owners[0], key, fp)
                    if isinstance(begun, StoredResponse):
                        return replay(begun)
                    reservation = begun
                body = self._body(route)
                call = Call(self, owners[0], dict(params), body, query, owners, route, reservation, operator)
                response = self.respond(route, route.handler(call))
            except ApiError as err:
                response = error_response(err)
            except SluiceError as err:
                response = error_response(from_sluice(err))
            except HTTPException:
                if reservation is not None:
                    self.idempotency.release(reservation)
                raise
            except Exception:
                log.exception("unhandled error in %s %s", route.method, route.path)
                response = error_response(ApiError(500, "internal", "internal error; it has been logged"))
            if reservation is not None:
                self._settle(reservation, response)
            return response

        handle.__name__ = route.operation_id
        return handle

    def _settle(self, reservation: Reservation, response: Response) -> None:
        """Store a success for replay; after a failure, free the key unless the
        handler had recorded its effect (then the recorded response stands)."""
        if 200 <= response.status_code < 300 and not response.is_streamed:
            self.idempotency.finish(reservation, stored(response))
        else:
            self.idempotency.release(reservation)

    def _authenticate(self) -> Identity:
        return self.auth.authenticate(request.headers.get("Authorization"))

    def _rate_limit(self, owner: str) -> None:
        if self._limit is None:
            return
        # Leased from sharded buckets (common.service.leased_ratelimit): a busy
        # user's requests do not write one document each.
        limiter = leased_ratelimit.shared(self.deps.store, self.deps.clock, key=f"api:{owner}", plan=self._limit)
        wait_s = limiter.try_acquire()
        if wait_s > 0:
            wait = max(1, math.ceil(wait_s))
            raise ApiError(
                429,
                "rate_limited",
                f"too many requests; try again in {wait} s",
                details={"limit_per_minute": self.settings.rate_limit_rpm},
                headers={"Retry-After": str(wait)},
            )

    def _query(self, route: Route) -> BaseModel | None:
        if route.query is None:
            return None
        try:
            return route.query.model_validate(request.args.to_dict())
        except ValidationError as exc:
            raise ApiError(
                422, "invalid_query", "invalid query parameters", details=_validation_details(exc, "query")
            ) from exc

    def _fingerprint_body(self, route: Route) -> bytes:
        if route.body_kind != "multipart":
            return request.get_data(cache=True)
        # Multipart boundaries differ between attempts: fingerprint the content.
        parts: list[str] = []
        for name, storage in sorted(request.files.items(multi=True), key=lambda kv: (kv[0], kv[1].filename or "")):
            import hashlib

            h = hashlib.sha256()
            while chunk := storage.stream.read(1024 * 1024):
                h.update(chunk)
            storage.stream.seek(0)
            parts.append(f"{name}\x00{storage.filename}\x00{h.hexdigest()}")
        return "\n".join(parts).encode()

    def _body(self, route: Route) -> BaseModel | None:
        if route.body is None or route.body_kind != "json":
            return None
        raw = request.get_data(cache=True)
        if not raw.strip():
            data: Any = {}
        else:
            if not _is_json(request.mimetype):
                raise ApiError(
                    415,
                    "unsupported_media_type",
                    f"the request body must be JSON (Content-Type: application/json), "
                    f"not {request.mimetype or 'untyped'}",
                )
            try:
                data = json.loads(raw)
            except ValueError as exc:
                raise ApiError(400, "invalid_json", f"the request body is not valid JSON: {exc}") from exc
            except RecursionError as exc:
                raise ApiError(400, "invalid_json", "the request body nests too deeply") from exc
        if not isinstance(data, dict):
            raise ApiError(422, "invalid_body", "the request body must be a JSON object")
        try:
            return route.body.model_validate(data)
        except ValidationError as exc:
            raise ApiError(
                422, "invalid_body", "invalid request body", details=_validation_details(exc, "body")
            ) from exc

    def respond(self, route: Route, result: Result) -> Response:
        return respond(route, result)

    def document(self) -> str:
        return openapi.document(self.routes)


def make_authenticator(deps: Deps, settings: ApiSettings) -> Authenticator:
    """Bearer tokens from the configured issuers, plus the development identity
    where explicitly configured (embedded backend only). No issuer and no
    development identity is a configuration error, never "auth off"."""
    issuers = settings.all_issuers()
    dev = settings.dev_identity
    if dev is not None and deps.settings.backend != "local":
        raise ConfigError(
            "SLUICE_API_DEV_IDENTITY is allowed only on the embedded backend",
            hint="Configure OIDC issuers (SLUICE_API_ISSUERS or a preset) for a deployed API.",
        )
    if not issuers and dev is None:
        raise ConfigError(
            "the API has no way to authenticate callers",
            hint="Configure SLUICE_API_ISSUERS (or SLUICE_API_FIREBASE_PROJECT, SLUICE_API_ENTRA_TENANT and "
            "SLUICE_API_ENTRA_CLIENT_ID, SLUICE_API_GOOGLE_CLIENT_ID); locally, SLUICE_API_DEV_IDENTITY=<user>.",
        )
    if dev is not None:
        log.warning(
            "API AUTHENTICATION USES THE LOCAL DEVELOPMENT IDENTITY %r: every request without a token acts as "
            "that user. Never expose this server beyond this machine.",
            dev,
        )
    verifier = (
        OidcVerifier(
            issuers,
            fetcher=fetch_jwks,
            jwks_ttl_s=settings.jwks_ttl_s,
            leeway_s=settings.clock_skew_s,
            legacy_issuer=settings.legacy_issuer,
        )
        if issuers
        else None
    )
    return BearerAuthenticator(verifier, dev_identity=dev)


def create_app(
    deps: Deps,
    settings: ApiSettings | None = None,
    *,
    authenticator: Authenticator | None = None,
    sender: Sender | None = None,
    sleep: Callable[[float], None] | None = None,
    routes: Sequence[Route] | None = None,
) -> Flask:
    cfg = settings or ApiSettings()
    served = tuple(routes or ROUTES)
    api = Api(deps, cfg, authenticator or make_authenticator(deps, cfg), sender=sender, sleep=sleep, routes=served)
    app = Flask("sluice.api")
    # Multipart overhead on top of the largest direct upload.
    app.config["MAX_CONTENT_LENGTH"] = max(cfg.max_upload_bytes, deps.settings.max_document_bytes) + 1024 * 1024
    app.extensions["sluice_api"] = api
    for route in served:
        app.add_url_rule(
            route.flask_rule(),
            endpoint=f"{route.method} {route.path}",
            view_func=api.view(route),
            methods=[route.method],
        )

    _measure_requests(app)
    from common.console import mount

    mount(app, cfg)

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Response:
        code = exc.code or 500
        names = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large", 400: "bad_request"}
        message = exc.description or exc.name
        if code == 413:
            message = f"the request is larger than the limit ({cfg.max_upload_bytes} bytes for a direct upload)"
        return error_response(ApiError(code, names.get(code, "http_error"), message))

    return app


# Methods are labels as they are; anything else a client invents is "other" (bounded).
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def route_template(req: Request) -> str:
    """The matched route's OpenAPI template (``/v1/jobs/{job_id}``); ``unmatched`` for a 404."""
    rule = req.url_rule
    if rule is None:
        return "unmatched"
    endpoint = rule.endpoint
    # API routes are registered as "METHOD /template"; other rules (/metrics) by their rule.
    return endpoint.split(" ", 1)[1] if " /" in endpoint else rule.rule


def _measure_requests(app: Flask) -> None:
    """Count and time every request by route template, method and status (when metrics are on)."""

    @app.before_request
    def _start() -> None:
        g.sluice_started = time.perf_counter()

    @app.after_request
    def _record(response: Response) -> Response:
        started = g.get("sluice_started")
        if started is not None:
            method = request.method if request.method in _METHODS else "other"
            seconds = time.perf_counter() - started
            metrics.record_request(route_template(request), method, response.status_code, seconds=seconds)
        return response


def api_of(app: Flask) -> Api:
    api = app.extensions["sluice_api"]
    assert isinstance(api, Api)
    return api


# -- the Cloud Function's app, built on first use --------------------------------------------

_cloud_app: Flask | None = None
_cloud_lock = threading.Lock()


def cloud_app() -> Flask:
    """The process-wide app over :func:`common.bootstrap.deps` (never built at import time)."""
    global _cloud_app
    if _cloud_app is None:
        with _cloud_lock:
            if _cloud_app is None:
                from common import bootstrap

                _cloud_app = create_app(bootstrap.deps())
    return _cloud_app


def handle_request(req: Request) -> Response:
    """Dispatch a functions-framework request to the API app (same routes, same pipeline)."""
    app = cloud_app()
    # The framework drains the body after the request; read it once (cached on
    # its request) and give the API app its own copy of the stream.
    data = req.get_data(cache=True)
    environ = dict(req.environ)
    environ["wsgi.input"] = io.BytesIO(data)
    environ["CONTENT_LENGTH"] = str(len(data))
    with app.request_context(environ):
        response = app.full_dispatch_request()
    return response
