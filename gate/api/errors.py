"""HTTP errors: one JSON shape for every 4xx/5xx, statuses chosen by the error ``code``.

Core code raises ``GateError`` subclasses with a stable ``code`` and never imports FastAPI;
this module is the only place that turns a code into an HTTP status. Every error answers
``{"error": {"code", "message", "request_id"}}``. Messages never echo the request's input
(it may hold image bytes or names): validation errors name the field, not its value.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from gate.errors import GateError, validation_message

#: GateError code -> HTTP status. Subclasses without an entry use their parent's.
STATUS_BY_CODE: dict[str, int] = {
    "invalid_request": 422,
    "invalid_image": 422,
    "image_too_large": 413,
    "unsupported_media_type": 415,
    "enrollment_failed": 422,
    "consent_error": 422,
    "already_revoked": 409,
    "already_enrolled": 409,
    "not_found": 404,
    "check_timeout": 503,
    "model_unavailable": 503,
    "model_mismatch": 503,
    "inference_failed": 503,
    "policy_invalid": 503,
    "storage_unavailable": 503,
    "audit_failed": 503,
    "gate_closed": 503,
    "report_resolved": 409,
    "invalid_hash": 422,
    "hash_list_invalid": 422,
    "pdq_unavailable": 503,
    "provenance_failed": 503,
}

#: Codes for statuses raised by the framework itself (routing, body parsing).
_CODE_BY_STATUS: dict[int, str] = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "body_too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
    429: "rate_limited",
    503: "not_ready",
}


class ApiError(Exception):
    """An error of the HTTP layer itself (authentication, limits, body format)."""

    code = "api_error"
    status = 400

    def __init__(self, message: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.headers = headers or {}


class Unauthorized(ApiError):
    code, status = "unauthorized", 401

    def __init__(self, message: str) -> None:
        super().__init__(message, headers={"WWW-Authenticate": "Bearer"})


class Forbidden(ApiError):
    code, status = "forbidden", 403


class UnsupportedBody(ApiError):
    code, status = "unsupported_media_type", 415


class RateLimited(ApiError):
    code, status = "rate_limited", 429

    def __init__(self, retry_after_s: int) -> None:
        super().__init__("too many requests for this API key; retry later",
                         headers={"Retry-After": str(retry_after_s)})


class NotReady(ApiError):
    code, status = "not_ready", 503


class BodyTooLarge(StarletteHTTPException):
    """Raised while the body streams in; an HTTPException so body parsers re-raise it."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"the request body is larger than {limit} bytes")


def status_for(exc: GateError) -> int:
    for cls in type(exc).__mro__:
        code = getattr(cls, "code", None)
        if code in STATUS_BY_CODE:
            return STATUS_BY_CODE[code]
    return 500


def error_response(request: Request, status: int, code: str, message: str,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    request_id = getattr(request.state, "request_id", None)
    body = {"error": {"code": code, "message": message, "request_id": request_id}}
    return JSONResponse(body, status_code=status, headers=headers)


def describe_validation(errors: Any) -> tuple[str, str]:
    """(code, message) for pydantic/FastAPI validation errors, naming fields, not values."""
    items = list(errors)
    if any(e.get("type") == "json_invalid" for e in items):
        return "malformed_json", "the request body is not valid JSON"
    return "invalid_request", validation_message(items)


async def _gate_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, GateError)
    message = exc.message if exc.field is None else f"{exc.field}: {exc.message}"
    return error_response(request, status_for(exc), exc.code, message)


async def _api_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return error_response(request, exc.status, exc.code, exc.message, exc.headers)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    code, message = describe_validation(exc.errors())
    return error_response(request, 400 if code == "malformed_json" else 422, code, message)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = _CODE_BY_STATUS.get(exc.status_code, f"http_{exc.status_code}")
    message = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ")
    return error_response(request, exc.status_code, code, message, dict(exc.headers or {}))


async def _internal_error(request: Request, exc: Exception) -> JSONResponse:
    return error_response(request, 500, "internal_error", "an internal error occurred")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(GateError, _gate_error)
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _internal_error)
