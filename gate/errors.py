"""One error hierarchy for the whole gate.

Every error carries a stable ``code`` and a ``message`` that is safe to log and to show to
a caller: it never contains pixels, embeddings, keys or personal names. Core code raises
these; only the HTTP layer maps ``code`` to a status.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any


class GateError(Exception):
    """Base of every error the gate raises on purpose."""

    code: str = "gate_error"

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


class InvalidRequest(GateError):
    """The request is malformed: unknown operation, role, category or field."""

    code = "invalid_request"


class InvalidImage(GateError):
    """An image could not be decoded safely (corrupt, truncated, bomb, too large...)."""

    code = "invalid_image"


class ImageTooLarge(InvalidImage):
    """An image exceeds the configured byte, pixel or frame limits."""

    code = "image_too_large"


class UnsupportedMediaType(InvalidImage):
    """The bytes are not an image format the gate accepts."""

    code = "unsupported_media_type"


class EnrollmentError(GateError):
    """An enrolment image has no face or more than one face, or is too poor to use."""

    code = "enrollment_failed"


class ModelUnavailable(GateError):
    """Model weights are missing, fail verification, or cannot be loaded."""

    code = "model_unavailable"


class ModelMismatch(GateError):
    """Stored templates were made by another model pack than the one running."""

    code = "model_mismatch"


class InferenceError(GateError):
    """A model raised, returned non-finite values, or timed out."""

    code = "inference_failed"


class PolicyError(GateError):
    """A policy file is invalid (names the file, line and field)."""

    code = "policy_invalid"


class ConsentError(GateError):
    """A consent operation is invalid (unknown subject or grant, bad scope...)."""

    code = "consent_error"


class NotFound(ConsentError):
    """A subject, grant or other record does not exist."""

    code = "not_found"


class StorageError(GateError):
    """The consent store or audit log could not be read or written."""

    code = "storage_unavailable"


class TemplateKeyMismatch(StorageError):
    """Stored templates were sealed with a template key this gate does not hold (e.g. two
    data directories with different keys on one database)."""

    code = "template_key_mismatch"


class AuditError(GateError):
    """The audit chain could not be appended or does not verify."""

    code = "audit_failed"


class GateClosed(GateError):
    """The gate was closed; no further decisions are made."""

    code = "gate_closed"


def validation_message(errors: Iterable[Mapping[str, Any]], *, skip: str = "body") -> str:
    """One line describing pydantic validation errors: the fields and what is wrong with
    them, never the values (they may hold image bytes or names)."""
    items = list(errors)
    parts = []
    for e in items[:5]:
        loc = ".".join(str(p) for p in e.get("loc", ()) if p != skip) or skip
        parts.append(f"{loc}: {e.get('msg', 'invalid')}")
    more = f" (and {len(items) - 5} more)" if len(items) > 5 else ""
    return "; ".join(parts) + more


def invalid_request(errors: Iterable[Mapping[str, Any]]) -> InvalidRequest:
    """``InvalidRequest`` for pydantic validation errors (see ``validation_message``)."""
    return InvalidRequest(validation_message(errors))
