"""The policy language: a pydantic model, exported as JSON Schema for ``policies/*.yaml``.

A policy is a list of rules. Each rule has an id, an effect, a scope (``face``: evaluated
for every face, including enrolled names found in the prompt; ``request``: once) and a
``when`` block whose conditions must all hold. Lists mean "any of"; an omitted condition
means "any". The models are strict: no type coercion, no unknown fields, no empty lists.
Semantic checks name the offending field in the error context (``ctx["loc"]``) so the
loader can point at its line.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.config import JsonDict
from pydantic_core import PydanticCustomError

from gate.types import ContentCategory, Identity, Operation, Role, SubjectStatus, Verdict

AgeBand = Literal["minor", "adult", "unknown"]
FaceSource = Literal["image", "prompt"]
Obligation = Literal["label_ai_content", "embed_c2pa_manifest", "notify_subject",
                     "log_for_review"]

#: ``when`` conditions about one face; a request-scoped rule may not use them.
FACE_CONDITIONS: tuple[str, ...] = ("identity", "identity_not", "subject_status", "role",
                                    "age_band", "source", "grant_purpose")

_Label = Annotated[str, Field(min_length=1, max_length=200)]


_T = TypeVar("_T")
#: A ``when`` condition: a non-empty list meaning "any of", or omitted (``None``: any).
AnyOf = Annotated[list[_T] | None, Field(min_length=1)]


def _cond(description: str) -> Any:
    return Field(default=None, description=description)


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)


def located_error(message: str, *loc: str | int) -> PydanticCustomError:
    """A validation error whose ``ctx["loc"]`` is the offending field, relative to the model."""
    return PydanticCustomError("policy_rule", message, {"loc": loc})


class CountRange(_Strict):
    """Inclusive bounds; an omitted bound is open."""

    min: int | None = Field(default=None, ge=0)
    max: int | None = Field(default=None, ge=0)

    def contains(self, n: int) -> bool:
        return (self.min is None or n >= self.min) and (self.max is None or n <= self.max)

    @model_validator(mode="after")
    def _ordered(self) -> CountRange:
        if self.min is not None and self.max is not None and self.min > self.max:
            raise located_error("min is greater than max, so nothing can match", "min")
        return self


class When(_Strict):
    """Conditions; every one given must hold. Omitted means "any"."""

    # -- about the request ------------------------------------------------------------
    operation: AnyOf[Operation] = _cond("the request's operation is one of these")
    operation_not: AnyOf[Operation] = _cond("the request's operation is none of these")
    content_any: AnyOf[ContentCategory] = _cond(
        "the effective content (declared + detected) includes at least one of these")
    content_none: AnyOf[ContentCategory] = _cond(
        "the effective content includes none of these")
    app_id: AnyOf[_Label] = _cond("the requesting app is one of these")
    user_id: AnyOf[_Label] = _cond(
        "the app's end user is one of these (never matches a request without a user id)")
    face_count: CountRange | None = Field(
        default=None, description="the number of faces (image and prompt) is within bounds")
    # -- about one face (scope: face only) -------------------------------------------
    identity: AnyOf[Identity] = _cond("the face's identity class is one of these")
    identity_not: AnyOf[Identity] = _cond("the face's identity class is none of these")
    subject_status: AnyOf[SubjectStatus] = _cond(
        "the enrolled subject's status is one of these (never matches an unenrolled face)")
    role: AnyOf[Role] = _cond("the role of the image the face is in is one of these")
    age_band: AnyOf[AgeBand] = _cond("the face's apparent age band is one of these")
    source: AnyOf[FaceSource] = _cond(
        "where the face was found: an input image, or an enrolled name in the prompt")
    grant_purpose: AnyOf[_Label] = _cond(
        "the purpose of the grant covering this face is one of these (never matches "
        "a face without a grant purpose)")


_REQUEST_SCOPE_SCHEMA: JsonDict = {
    "if": {"properties": {"scope": {"const": "request"}}, "required": ["scope"]},
    "then": {"properties": {"when": {"properties": {
        f: {"type": "null"} for f in FACE_CONDITIONS}}}},
}
_OBLIGATIONS_SCHEMA: JsonDict = {
    "if": {"properties": {"effect": {"const": "allow"}}},
    "else": {"properties": {"obligations": {"maxItems": 0}}},
}


class Rule(_Strict):
    model_config = ConfigDict(json_schema_extra={
        "allOf": [_REQUEST_SCOPE_SCHEMA, _OBLIGATIONS_SCHEMA]})

    id: str = Field(pattern=r"^[a-z][a-z0-9_.\-]{1,79}$",
                    description="stable id, reported in every decision this rule makes")
    effect: Verdict
    scope: Literal["face", "request"] = "face"
    message: str = Field(min_length=1, max_length=300,
                         description="shown to the caller; never personal data")
    when: When = Field(default_factory=When)
    obligations: list[Obligation] = Field(
        default_factory=list, description="attached to the decision when it is allow "
                                          "(allow rules only)")

    @model_validator(mode="after")
    def _scope_fits(self) -> Rule:
        if self.scope == "request":
            for name in FACE_CONDITIONS:
                if getattr(self.when, name) is not None:
                    raise located_error(
                        f"a request-scoped rule cannot use the face condition {name!r}",
                        "when", name)
        return self

    @model_validator(mode="after")
    def _obligations_fit(self) -> Rule:
        if self.obligations and self.effect != "allow":
            raise located_error("obligations only apply to allow rules", "obligations")
        return self


#: Rule id prefixes of the engine's own rules (``core.*``, ``default.no_matching_rule``).
RESERVED_ID_PREFIXES: tuple[str, ...] = ("core.", "default.")
_RESERVED_ID_SCHEMA: JsonDict = {"properties": {"rules": {"items": {"properties": {"id": {
    "not": {"pattern": r"^(core|default)\."}}}}}}}


class Policy(_Strict):
    model_config = ConfigDict(json_schema_extra={
        "description": "A consent-gate policy. Rule ids must be unique (checked by the "
                       "loader, not expressible in JSON Schema).",
        "allOf": [_RESERVED_ID_SCHEMA]})

    policy: str = Field(min_length=1, max_length=80)
    version: str = Field(min_length=1, max_length=80)
    description: str = ""
    #: Obligations attached to every allowed decision.
    obligations: list[Obligation] = Field(
        default_factory=list, description="attached to every allowed decision")
    rules: list[Rule] = Field(min_length=1)

    @model_validator(mode="after")
    def _ids(self) -> Policy:
        seen: set[str] = set()
        for i, rule in enumerate(self.rules):
            if rule.id.startswith(RESERVED_ID_PREFIXES):
                prefix = rule.id.split(".")[0] + "."
                raise located_error(f"rule ids starting with {prefix!r} are reserved for the "
                                    "engine's own rules", "rules", i, "id")
            if rule.id in seen:
                raise located_error(f"duplicate rule id {rule.id!r}", "rules", i, "id")
            seen.add(rule.id)
        return self
