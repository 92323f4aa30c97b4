"""What every resource's handlers share: ownership, paging, the caller's records."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

from common.api import schemas as s
from common.api.call import Call, Result, Route
from common.api.errors import ApiError, not_found
from common.core.models import (
    Record,
)
from common.ports.store import Filter, Order, Page
from common.service import deletion, repo

R = TypeVar("R", bound=Record)

E404 = (401, 404)
E_BODY = (401, 404, 422)
E_STATE = (401, 404, 409)


def owned(call: Call, model: type[R], ident: str, *, what: str | None = None) -> R:
    """The caller's record ``ident``; 404 (naming it ``what``) when it does not exist or is not theirs."""
    found = repo.get(call.deps.store, model, ident)
    if found is None or not call.owns(found[0].owner):
        name = what or model.__name__.lower().replace("sourcefile", "file").replace("extractiontask", "task")
        raise not_found(name, ident)
    return found[0]


def page(
    call: Call, model: type[R], filters: Sequence[Filter], order_by: Sequence[Order], q: s.PageQuery
) -> tuple[list[R], str | None]:
    limit = min(q.limit, call.settings.max_page_size)
    try:
        page: Page = call.deps.store.query(
            model.collection, filters=filters, order_by=order_by, limit=limit, start_after=q.cursor
        )
    except ValueError as exc:
        raise ApiError(400, "invalid_cursor", f"the cursor does not belong to this listing: {exc}") from exc
    return [model.from_doc(snap.data) for snap in page.items], page.next_cursor


def mine(call: Call) -> Filter:
    if len(call.owners) == 1:
        return Filter("owner", "==", call.owner)
    return Filter("owner", "in", list(call.owners))


@contextmanager
def busy_as_409() -> Iterator[None]:
    """A job that is busy (a run in progress, automations using it) answers 409 ``job_busy``."""
    try:
        yield
    except deletion.JobBusy as err:
        details: dict[str, Any] = {"automations": err.automations} if err.automations else {}
        raise ApiError(409, "job_busy", err.message, details={**details, "hint": err.hint}) from err


def route(method: Any, path: str, handler: Callable[[Call], Result], summary: str, tag: str, **kw: Any) -> Route:
    return Route(method=method, path=path, handler=handler, summary=summary, tag=tag, **kw)
