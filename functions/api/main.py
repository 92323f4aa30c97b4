"""Cloud Function (HTTPS): the job API. Thin: the app is imported and built on the first request."""

import functions_framework
from flask import Request, Response


@functions_framework.http
def handle(request: Request) -> Response:
    from common.api.app import handle_request  # first request only: JWT, settings and services load here

    return handle_request(request)
