"""The embedded backend's signed URLs: download and upload bytes without a bearer token."""

from __future__ import annotations

import mimetypes
from pathlib import Path
from typing import BinaryIO, Protocol, cast, runtime_checkable

from flask import request, send_file

from common.api.call import Call, Reply, Result, Route
from common.api.errors import ApiError, not_found
from common.api.routes._shared import route
from common.service import uploads


@runtime_checkable
class SignedBlobs(Protocol):
    def verify_signature(self, method: str, bucket: str, name: str, expires: int, signature: str) -> bool: ...

    def path_of(self, uri: str) -> Path: ...


def _signed(call: Call, method: str) -> tuple[SignedBlobs, str]:
    blobs = call.deps.blobs
    if not isinstance(blobs, SignedBlobs):
        raise ApiError(404, "not_found", "this deployment serves no blobs (use the storage URL)")
    bucket, name = call.params["bucket"], call.params["name"]
    try:
        expires = int(request.args.get("expires", ""))
    except ValueError:
        raise ApiError(403, "invalid_signature", "the URL's expiry is missing or invalid") from None
    signature = request.args.get("signature", "")
    try:
        uri = call.deps.blobs.uri(bucket, name)
        valid = blobs.verify_signature(method, bucket, name, expires, signature)
    except ValueError:
        valid = False
    if not valid:
        raise ApiError(403, "invalid_signature", "the signed URL is invalid or has expired")
    return blobs, uri


def download_blob(call: Call) -> Result:
    blobs, uri = _signed(call, "GET")
    info = call.deps.blobs.stat(uri)
    if info is None:
        raise not_found("object", call.params["name"])
    return send_file(
        blobs.path_of(uri),
        mimetype=info.content_type or mimetypes.guess_type(uri)[0] or "application/octet-stream",
        as_attachment=True,
        download_name=Path(info.name).name,
    )


def upload_blob(call: Call) -> Result:
    _, uri = _signed(call, "PUT")
    limit = call.deps.settings.max_document_bytes
    if request.content_length is None:
        raise ApiError(411, "length_required", "send Content-Length with the upload")
    if request.content_length > limit:
        raise ApiError(
            413, "payload_too_large", f"documents may be at most {limit} bytes", details={"max_bytes": limit}
        )
    uploads.receive_signed_upload(call.deps, uri, cast(BinaryIO, request.stream), content_type=request.mimetype or None)
    return Reply(status=204)


ROUTES: list[Route] = [
    route(
        "GET",
        "/v1/blobs/{bucket}/{name}",
        download_blob,
        "Download through a signed URL",
        "blobs",
        auth=False,
        reply="file",
        slash_params=("name",),
        errors=(403, 404),
    ),
    route(
        "PUT",
        "/v1/blobs/{bucket}/{name}",
        upload_blob,
        "Upload through a signed URL",
        "blobs",
        auth=False,
        body_kind="raw",
        status=200,
        slash_params=("name",),
        errors=(403, 411, 413),
    ),
]
