"""API errors: one JSON shape, ``{"error": {"code", "message", "details"}}``.

Service errors (:mod:`common.core.errors`) map to status codes here; a record
that exists but belongs to another user is a 404 like one that does not exist.
"""

from __future__ import annotations

from typing import Any

from common.core.errors import (
    AlreadyExists,
    ConfigError,
    IllegalTransition,
    NotFound,
    PermanentError,
    PreconditionFailed,
    ReconnectRequired,
    SluiceError,
)

# Permanent errors that mean "not in this state", not "bad input".
_CONFLICT_CODES = frozenset(
    {"run_not_completed", "nothing_to_retry", "job_busy", "file_conflict", "task_not_completed"}
)


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        details: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details or {}
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message, "details": self.details}}


def not_found(what: str, ident: str) -> ApiError:
    return ApiError(404, "not_found", f"{what} {ident} not found")


def from_sluice(err: SluiceError) -> ApiError:
    details: dict[str, Any] = {"hint": err.hint}
    if isinstance(err, NotFound):
        return ApiError(404, "not_found", err.message, details=details)
    if isinstance(err, ReconnectRequired):
        return ApiError(409, err.code, err.message, details=details)
    if isinstance(err, IllegalTransition | PreconditionFailed | AlreadyExists):
        return ApiError(409, "conflict", err.message, details=details)
    if isinstance(err, ConfigError):
        return ApiError(501, "not_configured", err.message, details=details)
    if isinstance(err, PermanentError):
        status = 409 if err.code in _CONFLICT_CODES else 422
        return ApiError(status, err.code if err.code != "permanent" else "invalid", err.message, details=details)
    return ApiError(503, err.code, err.message, details=details)
