"""Imports into a job from Google Drive and Gmail."""

from __future__ import annotations

from common.api import schemas as s
from common.api.call import Call, Reply, Result, Route
from common.api.errors import ApiError
from common.api.routes._shared import owned, route
from common.core.messages import GmailItem
from common.core.models import (
    Job,
)


def _not_built(what: str) -> ApiError:
    return ApiError(
        501, "not_implemented", f"{what} is not available in this build", details={"hint": "Upload files instead."}
    )


def import_drive(call: Call) -> Result:
    job = owned(call, Job, call.params["job_id"])
    body = call.body_as(s.DriveImportRequest)
    try:
        from common.service.drive_import import start_drive_import
    except ImportError:
        raise _not_built("Drive import") from None
    op = start_drive_import(call.deps, call.sender, job, job.owner, body.item_ids)
    return Reply(s.OperationOut.of(op), status=202, headers={"Location": f"/v1/operations/{op.id}"})


def import_gmail(call: Call) -> Result:
    job = owned(call, Job, call.params["job_id"])
    body = call.body_as(s.GmailImportRequest)
    try:
        from common.service.gmail_import import start_gmail_import
    except ImportError:
        raise _not_built("Gmail import") from None
    items = [GmailItem(message_id=i.message_id, attachment_id=i.attachment_id) for i in body.items]
    op = start_gmail_import(call.deps, call.sender, job, job.owner, body.account, items)
    return Reply(s.OperationOut.of(op), status=202, headers={"Location": f"/v1/operations/{op.id}"})


ROUTES: list[Route] = [
    route(
        "POST",
        "/v1/jobs/{job_id}/imports/drive",
        import_drive,
        "Import Drive files or folders",
        "imports",
        body=s.DriveImportRequest,
        response=s.OperationOut,
        status=202,
        errors=(401, 404, 409, 422, 501),
    ),
    route(
        "POST",
        "/v1/jobs/{job_id}/imports/gmail",
        import_gmail,
        "Import Gmail attachments",
        "imports",
        body=s.GmailImportRequest,
        response=s.OperationOut,
        status=202,
        errors=(401, 404, 409, 422, 501),
    ),
]
