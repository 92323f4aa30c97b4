"""Connected Google accounts: OAuth consent, callback, listing, disconnecting."""

from __future__ import annotations

from common.api import schemas as s
from common.api.call import Call, Result, Route
from common.api.errors import ApiError
from common.api.routes._shared import E404, route
from common.service import integrations, oauth_flow


def list_integrations(call: Call) -> Result:
    found = [i for owner in call.owners for i in integrations.status(call.deps, owner=owner)]
    return s.IntegrationList(items=[s.IntegrationOut.model_validate(i.model_dump()) for i in found])


def connect_google(call: Call) -> Result:
    body = call.body_as(s.GoogleConnectIn)
    url, flow = oauth_flow.start(call.deps, owner=call.owner, features=body.features)
    return s.GoogleConnectOut(authorization_url=url, expires_at=flow.expires_at)


def google_callback(call: Call) -> Result:
    q = call.query_as(s.GoogleCallbackQuery)
    if q.error is not None or q.code is None:
        raise ApiError(400, "oauth_refused", f"Google did not grant access: {q.error or 'no code'}")
    info = oauth_flow.complete(call.deps, state=q.state, code=q.code)
    return s.IntegrationOut.model_validate(info.model_dump())


def disconnect_integration(call: Call) -> Result:
    account = call.params["account"]
    for owner in call.owners[1:]:  # a connection made before owner ids were qualified
        if integrations.status(call.deps, owner=owner, account=account):
            info = integrations.disconnect(call.deps, owner=owner, account=account)
            return s.IntegrationOut.model_validate(info.model_dump())
    info = integrations.disconnect(call.deps, owner=call.owner, account=account)
    return s.IntegrationOut.model_validate(info.model_dump())


ROUTES: list[Route] = [
    route(
        "GET",
        "/v1/integrations",
        list_integrations,
        "List connected Google accounts",
        "integrations",
        response=s.IntegrationList,
        errors=(401,),
    ),
    route(
        "POST",
        "/v1/integrations/google",
        connect_google,
        "Start connecting a Google account (OAuth consent URL)",
        "integrations",
        body=s.GoogleConnectIn,
        response=s.GoogleConnectOut,
        status=201,
        errors=(400, 401, 422, 501),
    ),
    route(
        "GET",
        "/v1/integrations/google/callback",
        google_callback,
        "Google's redirect after consent: stores the account's refresh token, encrypted",
        "integrations",
        query=s.GoogleCallbackQuery,
        response=s.IntegrationOut,
        auth=False,
        errors=(400, 409, 422, 501, 503),
    ),
    route(
        "DELETE",
        "/v1/integrations/{account}",
        disconnect_integration,
        "Disconnect a Google account",
        "integrations",
        response=s.IntegrationOut,
        errors=E404,
    ),
]
