"""HTTP request and response models (the engine's own types are reused for results).

Every request model forbids unknown fields: a body that names ``app_id`` is refused (422),
because the requesting app always comes from the API key. Images travel as base64 in
JSON (``data_b64``) or as files in ``multipart/form-data``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from gate.types import (
    ContentCategory,
    ContentList,
    Decision,
    Operation,
    Role,
    SubjectStatus,
)

_ID = r"^[A-Za-z0-9._:-]{1,64}$"
#: Subject and grant ids in paths and queries.
RECORD_ID = _ID
#: Integers stored in 32-bit columns (PostgreSQL ``integer``): larger ones are refused.
MAX_INT = 2**31 - 1


def _general() -> list[ContentCategory]:
    return ["general"]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    #: Fields that a multipart form may repeat (or give comma-separated).
    list_fields: ClassVar[frozenset[str]] = frozenset()

    @field_validator("*", mode="after")
    @classmethod
    def _no_nul(cls, value: Any) -> Any:
        """NUL characters are refused (PostgreSQL text cannot hold them)."""
        items = value if isinstance(value, list) else [value]
        if any(isinstance(v, str) and "\x00" in v for v in items):
            raise ValueError("must not contain NUL characters")
        return value


class ImageB64(_Body):
    """One input image, base64-encoded, with its role in the generation."""

    role: Role
    data_b64: str = Field(min_length=1, description="The image file's bytes, base64.")


class CheckFields(_Body):
    """A generation request without its images (the multipart form's ``request`` field)."""

    list_fields: ClassVar[frozenset[str]] = frozenset({"content"})

    operation: Operation
    prompt: str = Field(default="", max_length=20_000)
    negative_prompt: str = Field(default="", max_length=20_000)
    content: ContentList = Field(default_factory=_general)
    purpose: str | None = Field(default=None, max_length=200)
    user_id: str | None = Field(default=None, min_length=1, max_length=256,
                                description="The app's end user; the app comes from the key.")
    request_id: str | None = Field(default=None, pattern=_ID,
                                   description="Defaults to the X-Request-ID of the call.")


class CheckBody(CheckFields):
    """``POST /v1/check`` as JSON."""

    images: list[ImageB64] = Field(default_factory=list, max_length=16)


class CheckOutputFields(_Body):
    """A generated image's context (the multipart form's ``request`` field)."""

    list_fields: ClassVar[frozenset[str]] = frozenset({"content"})

    request_id: str = Field(pattern=_ID, description="The request id of the input decision.")
    operation: Operation = "txt2img"
    prompt: str = Field(default="", max_length=20_000)
    content: ContentList = Field(default_factory=_general)
    user_id: str | None = Field(default=None, min_length=1, max_length=256)
    label: bool = Field(default=False, description=(
        "When the output is allowed, also return it marked and labelled (as "
        "/v1/label-output does) in labelled_image_b64."))


class CheckOutputBody(CheckOutputFields):
    """``POST /v1/check-output`` as JSON."""

    image_b64: str = Field(min_length=1, description="The generated image, base64.")


class EnrollFields(_Body):
    """An enrolment without its photos (the multipart form's ``request`` field)."""

    list_fields: ClassVar[frozenset[str]] = frozenset({"aliases"})

    display_name: str = Field(min_length=1, max_length=200)
    status: SubjectStatus = "protected"
    owner_user_id: str | None = Field(
        default=None, min_length=1, max_length=256,
        description="Makes the subject the key's app user's own face (identity 'self').")
    aliases: list[str] = Field(default_factory=list, max_length=32)
    guardian: bool = Field(default=False, description="Enrolled by a guardian (a minor).")


class EnrollBody(EnrollFields):
    """``POST /v1/subjects`` as JSON: photos that each show exactly one face."""

    images_b64: list[str] = Field(min_length=1, max_length=10)


class StatusBody(_Body):
    status: SubjectStatus


class GrantBody(_Body):
    """A consent grant recorded on behalf of the subject, for any grantee app."""

    subject_id: str = Field(pattern=_ID)
    app_id: str = Field(min_length=1, max_length=128, description="The grantee app.")
    user_id: str | None = Field(default=None, min_length=1, max_length=256)
    operations: list[Operation] = Field(min_length=1)
    content: ContentList = Field(default_factory=_general)
    purpose: str | None = Field(default=None, max_length=200)
    not_before: datetime | None = None
    expires_at: datetime | None = None
    max_uses: int | None = Field(default=None, ge=1, le=MAX_INT)


class TraceFields(_Body):
    """``POST /v1/trace`` takes only the image (multipart field ``image``)."""


class TraceBody(TraceFields):
    """``POST /v1/trace`` as JSON."""

    image_b64: str = Field(min_length=1, description="The image to trace, base64.")


class LabelOutputFields(_Body):
    """Which allowed request the generated image belongs to."""

    request_id: str = Field(pattern=_ID, description="The request id of the input decision.")
    locale: str | None = Field(default=None, min_length=2, max_length=16,
                               description="Language of a visible label (e.g. zh-CN).")


class LabelOutputBody(LabelOutputFields):
    """``POST /v1/label-output`` as JSON."""

    image_b64: str = Field(min_length=1, description="The generated image, base64.")


PDQ_HEX = r"^[0-9a-fA-F]{64}$"


class ReportFields(_Body):
    """A takedown report without its image (multipart ``image`` field, optional when
    ``pdq`` is given)."""

    list_fields: ClassVar[frozenset[str]] = frozenset({"pdq"})

    reason: Literal["ncii", "impersonation", "minor", "other"] = "ncii"
    pdq: list[Annotated[str, Field(pattern=PDQ_HEX)]] = Field(
        default_factory=list, max_length=64,
        description="PDQ hashes (64 hex) computed where the image is.")
    subject_id: str | None = Field(default=None, pattern=_ID,
                                   description="The enrolled person shown, if known.")
    contact: str | None = Field(default=None, min_length=1, max_length=500,
                                description="How to reach the reporter (kept with the "
                                            "report, erased with the subject).")


class ReportBody(ReportFields):
    """``POST /v1/reports`` as JSON."""

    image_b64: str | None = Field(default=None, min_length=1,
                                  description="The reported image, base64.")


class ResolveBody(_Body):
    status: Literal["actioned", "rejected"]
    reason: str = Field(min_length=1, max_length=2000)


class BlocklistEntry(BaseModel):
    entry_id: str
    pdq: str
    quality: int | None
    source: str
    list_name: str | None
    report_id: str | None
    provisional: bool
    added_at: str


class BlocklistPage(BaseModel):
    entries: list[BlocklistEntry]
    total: int


class ImportResult(BaseModel):
    added: int


class CheckOutputResult(Decision):
    """The output decision, and the labelled image when ``label`` was asked and allowed."""

    labelled_image_b64: str | None = None
    labelled_media_type: str | None = None


class AuditEvent(BaseModel):
    seq: int
    at: str
    hash: str
    prev_hash: str
    event: dict[str, Any]


class AuditPage(BaseModel):
    events: list[AuditEvent]
    #: Pass as ``since`` to read the next page.
    next_since: int


class Health(BaseModel):
    status: str


class Readiness(BaseModel):
    ready: bool
    checks: dict[str, bool]


class ErrorDetail(BaseModel):
    code: str
    message: str
    request_id: str | None


class ErrorResponse(BaseModel):
    """The one shape of every 4xx/5xx answer."""

    error: ErrorDetail


def multipart_schema(fields: type[_Body], files: dict[str, str]) -> dict[str, Any]:
    """OpenAPI schema of a multipart form: files, plus a ``request`` JSON field or the
    plain fields of ``fields``."""
    props: dict[str, Any] = {
        name: {"type": "array", "items": {"type": "string", "format": "binary"},
               "description": what} for name, what in files.items()}
    props["request"] = {"type": "string", "contentMediaType": "application/json",
                        "description": f"{fields.__name__} as JSON (or give plain fields)."}
    for name in fields.model_fields:
        props[name] = {"type": "string"}
    return {"type": "object", "properties": props, "additionalProperties": False}
