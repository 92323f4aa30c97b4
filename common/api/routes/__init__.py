"""The job API's routes, one module per resource; ``ROUTES`` is the whole table.

Handlers are plain functions over a :class:`common.api.call.Call`. They find
records through :func:`~common.api.routes._shared.owned`, which answers 404 for
another user's ids as for ids that do not exist; they decode the request, call a
service (:mod:`common.service`) and map its outcome. They never import the app
or the OpenAPI generator (an import-linter contract keeps it so).
"""

from __future__ import annotations

from common.api.call import Route
from common.api.routes import (
    admin,
    automations,
    blobs,
    collections,
    exports,
    files,
    imports,
    integrations,
    jobs,
    kinds,
    operations,
    review,
    runs,
)

ROUTES: list[Route] = [
    *jobs.ROUTES,
    *kinds.ROUTES,
    *files.ROUTES,
    *runs.ROUTES,
    *review.ROUTES,
    *exports.ROUTES,
    *operations.ROUTES,
    *imports.ROUTES,
    *automations.ROUTES,
    *integrations.ROUTES,
    *admin.ROUTES,
    *blobs.ROUTES,
    *collections.ROUTES,
]

__all__ = ["ROUTES"]
