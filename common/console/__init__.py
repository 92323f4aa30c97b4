"""The web console: static pages that run the product through the public ``/v1`` API.

:func:`mount` adds ``/`` (the page), ``/console/<file>`` (its scripts and
styles, shipped in this package: no build step, nothing from a CDN) and
``/console/config.json`` (how the page signs in: the Google client id when one
is configured, or that the development identity is on). The page holds no
privilege of its own: every action is a ``/v1`` request with the user's
bearer token (or none, under the development identity).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flask import Flask, Response

    from common.api.settings import ApiSettings

STATIC = Path(__file__).parent / "static"
_TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}


def mount(app: Flask, settings: ApiSettings) -> None:
    from flask import Response

    def asset(name: str) -> Response:
        path = (STATIC / name).resolve()
        if path.parent != STATIC.resolve() or not path.is_file() or path.suffix not in _TYPES:
            return Response("not found", status=404, mimetype="text/plain")
        # Short caching: a new release is picked up within a minute.
        return Response(
            path.read_bytes(),
            mimetype=_TYPES[path.suffix],
            headers={"Cache-Control": "public, max-age=60", "X-Content-Type-Options": "nosniff"},
        )

    def index() -> Response:
        response = asset("index.html")
        response.headers["Cache-Control"] = "no-cache"
        response.headers["Content-Security-Policy"] = (
            "default-src 'self'; img-src 'self' blob: data:; style-src 'self'; "
            "script-src 'self' https://accounts.google.com/gsi/client; "
            "frame-src https://accounts.google.com/gsi/; connect-src 'self' https://accounts.google.com/gsi/"
        )
        return response

    def config() -> Response:
        body = {"google_client_id": settings.google_client_id, "dev_identity": settings.dev_identity is not None}
        return Response(json.dumps(body), mimetype="application/json", headers={"Cache-Control": "no-cache"})

    app.add_url_rule("/", "console_index", index)
    app.add_url_rule("/console/", "console_index2", index)
    app.add_url_rule("/console/config.json", "console_config", config)
    app.add_url_rule("/console/<name>", "console_asset", asset)
