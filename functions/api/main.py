"""Cloud Function (HTTPS): the job API. Thin: the app is built on the first request."""

import functions_framework
from flask import Request, Response

from common.api.app import handle_request


@functions_framework.http
def handle(request: Request) -> Response:
    return handle_request(request)
