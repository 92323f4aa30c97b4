"""Job kinds: the registered kinds with their settings' JSON Schema and progress unit.

The console builds its create-job form from this (one settings form per kind)
and labels a run's progress with the kind's unit.
"""

from __future__ import annotations

from common import kinds
from common.api import schemas as s
from common.api.call import Call, Result, Route
from common.api.routes._shared import route


def list_kinds(call: Call) -> Result:
    out = []
    for name in kinds.names():
        kind = kinds.get(name)
        doc = (kind.settings_model.__doc__ or "").strip().splitlines()
        out.append(
            s.KindOut(
                name=kind.name,
                summary=doc[0] if doc else "",
                unit=kind.unit,
                settings_schema=kind.settings_model.model_json_schema(),
                user_created=kind.user_created,
            )
        )
    return s.KindList(items=out)


ROUTES: list[Route] = [
    route(
        "GET",
        "/v1/kinds",
        list_kinds,
        "List job kinds, their settings schema and progress unit",
        "jobs",
        response=s.KindList,
        errors=(401,),
    ),
]
