"""Value types that cross the gate's boundaries (SDK, CLI, HTTP).

Everything here is immutable and validated: unknown fields, operations, roles and content
categories are rejected, never guessed. Units are in the names (``similarity`` is cosine in
-1..1, ``latency_ms`` in milliseconds, ``bbox`` in pixels of the decoded, upright image).
No type here ever carries an embedding, and ``ImageInput`` never prints its bytes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import datetime
from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator

Operation = Literal[
    "txt2img",
    "img2img",
    "inpaint",
    "face_swap",
    "face_restore",
    "avatar_train",
    "video_face_swap",
    "edit",
    "nudify",
]
OPERATIONS: tuple[str, ...] = get_args(Operation)

ContentCategory = Literal["general", "sexual", "violent", "political"]
CONTENT_CATEGORIES: tuple[str, ...] = get_args(ContentCategory)

# Synonyms from the design document's vocabulary, normalised on input.
_CONTENT_SYNONYMS = {
    "none": "general",
    "nudity": "sexual",
    "nsfw": "sexual",
    "violence": "violent",
}

Role = Literal["source", "target", "reference", "init", "mask", "training", "output"]
ROLES: tuple[str, ...] = get_args(Role)

Verdict = Literal["allow", "needs_consent", "deny"]
#: Jurisdiction packs (policies/jurisdictions/), in canonical order.
JurisdictionCode = Literal["cn", "eu", "us-il", "us-tx", "us-wa", "us"]
JURISDICTION_CODES: tuple[str, ...] = get_args(JurisdictionCode)
#: How consent was given; jurisdiction packs may require some (docs/jurisdictions.md).
Formality = Literal["separate_consent", "explicit_consent", "written_release",
                    "guardian_consent", "informed_consent"]
FORMALITIES: tuple[str, ...] = get_args(Formality)
Identity = Literal["self", "consented", "protected", "unknown", "unidentifiable"]
SubjectStatus = Literal["consenting", "protected"]

#: Operations that put or change a real person's face in an output.
SENSITIVE_OPERATIONS: frozenset[str] = frozenset(
    {"face_swap", "video_face_swap", "inpaint", "avatar_train", "edit", "nudify"}
)


def _normalise_content(value: Any) -> Any:
    if isinstance(value, str):
        value = [value]
    if isinstance(value, (list, tuple)):
        out: list[Any] = []
        for item in value:
            if isinstance(item, str):
                item = item.strip().lower()
                item = _CONTENT_SYNONYMS.get(item, item)
            if item not in out:
                out.append(item)
        return out
    return value


ContentList = Annotated[list[ContentCategory], BeforeValidator(_normalise_content)]


def _general() -> list[ContentCategory]:
    return ["general"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=False)


class Requester(_Frozen):
    """Who asks: the app (tenant) and, optionally, its end user.

    A face is the requester's own (identity ``self``) when it matches a subject whose
    ``owner`` is this app and user: owners are bound at enrolment, by an operator or by
    the person's own liveness-checked self-enrolment through the app (docs/consent.md).
    """

    app_id: str = Field(min_length=1, max_length=128)
    user_id: str | None = Field(default=None, min_length=1, max_length=256)


class ImageInput(_Frozen):
    """One input image (or video) and its role in the generation."""

    role: Role
    data: bytes = Field(repr=False)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    def __repr__(self) -> str:  # never print the bytes
        return f"ImageInput(role={self.role!r}, bytes={len(self.data)})"

    __str__ = __repr__


class GateRequest(_Frozen):
    """A generation request, as the gate sees it before the model runs."""

    operation: Operation
    images: list[ImageInput] = Field(default_factory=list, max_length=16)
    prompt: str = Field(default="", max_length=20_000)
    negative_prompt: str = Field(default="", max_length=20_000)
    content: ContentList = Field(default_factory=lambda: _general())
    purpose: str | None = Field(default=None, max_length=200)
    requester: Requester
    request_id: str | None = Field(default=None, max_length=64)
    #: Jurisdiction packs applied on top of the deployment's (``GATE_JURISDICTIONS``).
    #: Packs only tighten, so a request can add packs but never remove one.
    jurisdictions: list[JurisdictionCode] = Field(default_factory=list, max_length=6)

    @field_validator("content")
    @classmethod
    def _non_empty(cls, v: list[str]) -> list[str]:
        return v or ["general"]


class Reason(_Frozen):
    """One rule that decided, and why, optionally about one face."""

    rule_id: str
    effect: Verdict
    message: str
    face_ref: str | None = None


class FaceResult(_Frozen):
    """What the gate found about one face. Never an embedding, never pixels."""

    face_ref: str  # "i{image}f{face}" or "i{image}t{frame}f{face}" for animated/video
    image_index: int
    frame_index: int = 0
    role: Role
    bbox: tuple[int, int, int, int]  # x_min, y_min, x_max, y_max in pixels
    det_score: float  # detector confidence 0..1
    quality: float  # 0..1, see gate.vision.quality
    size_px: int  # shorter side of the face box in pixels
    apparent_age: float | None = None  # years, only when a rule needed it
    age_band: Literal["minor", "adult", "unknown"] | None = None  # with a safety margin
    identity: Identity
    subject_id: str | None = None
    subject_status: SubjectStatus | None = None
    similarity: float | None = None  # cosine -1..1 to the best enrolled template
    grant_id: str | None = None
    source: Literal["image", "prompt"] = "image"


class ConsentNeed(_Frozen):
    """What consent would let a ``needs_consent`` request through."""

    face_ref: str
    subject_id: str | None  # None: the person is not enrolled yet
    operation: Operation
    content: list[ContentCategory]
    app_id: str
    user_id: str | None = None
    #: How the consent must be given where the app runs (jurisdiction packs), e.g.
    #: ``written_release``; a grant without them does not cover the request there.
    formalities: list[Formality] = Field(default_factory=list)


class Decision(_Frozen):
    """The gate's answer. ``allow`` only when every identifiable real face is covered."""

    verdict: Verdict
    request_id: str
    policy_version: str
    reasons: list[Reason]
    faces: list[FaceResult]
    obligations: list[str] = Field(default_factory=list)
    consent_needed: list[ConsentNeed] = Field(default_factory=list)
    #: The jurisdiction packs that applied (``GATE_JURISDICTIONS`` and the app's).
    jurisdictions: list[JurisdictionCode] = Field(default_factory=list)
    content: list[ContentCategory] = Field(default_factory=list)
    latency_ms: dict[str, float] = Field(default_factory=dict)

    @property
    def allowed(self) -> bool:
        return self.verdict == "allow"

    @property
    def rule_ids(self) -> list[str]:
        return [r.rule_id for r in self.reasons]


class Subject(_Frozen):
    """An enrolled person. Templates are never part of this view."""

    subject_id: str
    display_name: str
    status: SubjectStatus
    owner: Requester | None = None
    aliases: list[str] = Field(default_factory=list)
    model_pack: str
    template_count: int
    guardian: bool = False
    created_at: datetime


class GrantScope(_Frozen):
    """What a grant lets a grantee do: the one scope rule of grants and grant tokens."""

    app_id: str
    user_id: str | None = None  # None: any user of the app
    operations: list[Operation]
    content: list[ContentCategory]
    purpose: str | None = None  # None: any purpose

    def covers_request(self, *, app_id: str, user_id: str | None, operation: str,
                       content: Sequence[str], purpose: str | None) -> bool:
        """True when this scope covers the request: the same app (and user, when the
        scope names one), the operation, every content category, and the purpose."""
        if self.app_id != app_id:
            return False
        if self.user_id is not None and self.user_id != user_id:
            return False
        if operation not in self.operations or not set(content) <= set(self.content):
            return False
        return self.purpose is None or self.purpose == purpose




class ConsentRecord(_Frozen):
    """How a grant's consent was collected: the formalities it satisfies and, for a
    written release, when it was signed and the sha256 of the exact text shown."""

    formalities: list[Formality] = Field(default_factory=list)
    collected_by: Literal["operator", "portal", "app"] = "operator"
    signed_at: datetime | None = None
    text_sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    locale: str | None = Field(default=None, max_length=16)


class Grant(_Frozen):
    """A consent grant: who may use this subject's face, for what, until when."""

    grant_id: str
    subject_id: str
    app_id: str
    user_id: str | None = None
    operations: list[Operation]
    content: list[ContentCategory]
    purpose: str | None = None
    not_before: datetime | None = None
    expires_at: datetime | None = None
    max_uses: int | None = None
    uses: int = 0
    revoked_at: datetime | None = None
    created_at: datetime
    #: How consent was given (None: recorded by an operator without formalities).
    consent: ConsentRecord | None = None
    #: Compact JWS (EdDSA) of this grant's scope, verifiable offline with the gate's JWKS.
    token: str | None = None

    def is_active(self, now: datetime, *, count_uses: bool = True) -> bool:
        if self.revoked_at is not None:
            return False
        if self.not_before is not None and now < self.not_before:
            return False
        if self.expires_at is not None and now >= self.expires_at:
            return False
        return not (count_uses and self.max_uses is not None and self.uses >= self.max_uses)

    def covers(
        self,
        *,
        app_id: str,
        user_id: str | None,
        operation: str,
        content: Sequence[str],
        purpose: str | None,
        now: datetime,
        count_uses: bool = True,
    ) -> bool:
        """True when this grant's whole scope covers the request (and it is active);
        ``count_uses=False`` ignores used-up uses (screening the output of a counted use)."""
        return self.is_active(now, count_uses=count_uses) and self.scope.covers_request(
            app_id=app_id, user_id=user_id, operation=operation, content=content,
            purpose=purpose)

    @property
    def scope(self) -> GrantScope:
        return GrantScope(app_id=self.app_id, user_id=self.user_id,
                          operations=self.operations, content=self.content,
                          purpose=self.purpose)

    @property
    def formalities(self) -> frozenset[str]:
        return frozenset(self.consent.formalities) if self.consent is not None else frozenset()


class AuditVerification(_Frozen):
    """Result of walking the audit hash chain."""

    ok: bool
    events: int
    first_bad_seq: int | None = None
    problem: str | None = None
