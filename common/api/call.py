"""What a route handler sees and returns: :class:`Call`, :class:`Reply`, :class:`Route`.

This module sits below both the route package and the app: handlers import it,
the app (:mod:`common.api.app`) imports the handlers, and nothing here imports
either, so the API has no import cycle (an import-linter contract keeps it so).
The app is seen through :class:`ApiContext`, the few things a handler may use.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, TypeVar

from flask import Response
from pydantic import BaseModel

from common.api.idempotency import Idempotency, Reservation, ReservationGuard, StoredResponse
from common.api.settings import ApiSettings
from common.service.context import Deps, Sender

M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")
BodyKind = Literal["json", "multipart", "raw", "none"]
ReplyKind = Literal["json", "sse", "file", "empty"]


@dataclass
class Reply:
    """A handler's answer when the status or headers differ from the route's default."""

    body: BaseModel | None = None
    status: int | None = None
    headers: dict[str, str] = field(default_factory=dict)


Result = BaseModel | Reply | Response | None


class ApiContext(Protocol):
    """The app as its handlers see it."""

    deps: Deps
    settings: ApiSettings
    sender: Sender
    idempotency: Idempotency
    # SSE polling; None: time.sleep.
    sleep: Callable[[float], None] | None

    def document(self) -> str:
        """The OpenAPI document of the routes this app serves."""
        ...


@dataclass
class Call:
    api: ApiContext
    # The caller's owner id: new records are made under it.
    owner: str
    params: dict[str, str]
    body: BaseModel | None
    query: BaseModel | None
    # Every owner id whose records are the caller's (the owner id first; see Identity.owners).
    owners: tuple[str, ...] = ()
    route: Route | None = None
    reservation: Reservation | None = None
    # The caller may read everyone's stats and dead letters (ApiSettings.operators / operator_role).
    operator: bool = False

    def __post_init__(self) -> None:
        if not self.owners:
            self.owners = (self.owner,)

    def owns(self, owner: str) -> bool:
        return owner in self.owners

    def guard(self, render: Callable[[T], Result]) -> ReservationGuard[T] | None:
        """With an Idempotency-Key: a guard for the request's one effect, recording
        ``render(result)`` as the response to replay in the effect's transaction."""
        if self.reservation is None or self.route is None:
            return None
        route = self.route
        return ReservationGuard(
            self.api.idempotency, self.reservation, lambda result: stored(respond(route, render(result)))
        )

    @property
    def deps(self) -> Deps:
        return self.api.deps

    @property
    def sender(self) -> Sender:
        return self.api.sender

    @property
    def settings(self) -> ApiSettings:
        return self.api.settings

    def body_as(self, model: type[M]) -> M:
        assert isinstance(self.body, model), f"route body is {type(self.body).__name__}, not {model.__name__}"
        return self.body

    def query_as(self, model: type[M]) -> M:
        assert isinstance(self.query, model)
        return self.query


Handler = Callable[[Call], Result]


@dataclass(frozen=True)
class Route:
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"]
    path: str  # OpenAPI form: /v1/jobs/{job_id}
    handler: Handler
    summary: str
    tag: str
    body: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    response: type[BaseModel] | None = None
    status: int = 200
    errors: tuple[int, ...] = ()
    auth: bool = True
    body_kind: BodyKind = "json"
    reply: ReplyKind = "json"
    # Path parameters that may contain "/" (Flask's path converter).
    slash_params: tuple[str, ...] = ()
    description: str = ""

    @property
    def operation_id(self) -> str:
        return self.handler.__name__.lstrip("_")

    def flask_rule(self) -> str:
        rule = self.path
        for name in self.slash_params:
            rule = rule.replace("{" + name + "}", f"<path:{name}>")
        return rule.replace("{", "<").replace("}", ">")


def json_response(body: Any, status: int, headers: dict[str, str] | None = None) -> Response:
    return Response(
        json.dumps(body, separators=(",", ":")), status=status, mimetype="application/json", headers=headers
    )


def respond(route: Route, result: Result) -> Response:
    """A handler's result as the HTTP response (the route gives the default status)."""
    if isinstance(result, Response):
        return result
    reply = result if isinstance(result, Reply) else Reply(body=result)
    status = reply.status or route.status
    if reply.body is None:
        return Response(status=204 if status in (200, 204) else status, headers=reply.headers)
    return json_response(reply.body.model_dump(mode="json"), status, reply.headers)


# Headers a replay repeats (the rest describe the transport, not the answer).
_REPLAYED_HEADERS = ("Location",)


def stored(response: Response) -> StoredResponse:
    headers = {h: v for h in _REPLAYED_HEADERS if (v := response.headers.get(h)) is not None}
    return StoredResponse(response.status_code, response.get_data(as_text=True), response.mimetype or "", headers)


def iter_sse(chunks: Iterator[str]) -> Response:
    return Response(
        chunks,
        mimetype="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
