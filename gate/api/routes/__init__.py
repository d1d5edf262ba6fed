"""The sidecar's routes, one module per resource. Handlers only translate."""

from __future__ import annotations

from typing import Any

from gate.api.schemas import ErrorResponse

_WHAT = {
    400: "Malformed JSON.",
    401: "Missing, invalid or revoked API key.",
    403: "The API key lacks the scope.",
    404: "No such record.",
    409: "Conflict with the record's state (e.g. already revoked).",
    413: "Body or image too large.",
    415: "Unsupported media type or image format.",
    422: "Invalid or unknown fields.",
    429: "Rate limited (see Retry-After).",
    503: "Not ready, timed out, or a backend is unavailable.",
}


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for error statuses (all share ``ErrorResponse``)."""
    return {s: {"model": ErrorResponse, "description": _WHAT[s]} for s in statuses}


AUTH = (401, 403, 429, 503)


def body_doc(json_schema: str, form_schema: str) -> dict[str, Any]:
    """``openapi_extra`` for routes that read JSON or multipart themselves."""
    return {"requestBody": {"required": True, "content": {
        "application/json": {"schema": {"$ref": f"#/components/schemas/{json_schema}"}},
        "multipart/form-data": {"schema": {"$ref": f"#/components/schemas/{form_schema}"}},
    }}}
