"""The policy language: a pydantic model, exported as JSON Schema for ``policies/*.yaml``.

A policy is a list of rules. Each rule has an id, an effect, a scope (``face``: evaluated
for every face, including enrolled names found in the prompt; ``request``: once) and a
``when`` block whose conditions must all hold. Lists mean "any of".
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from gate.types import ContentCategory, Identity, Operation, Role, SubjectStatus, Verdict

AgeBand = Literal["minor", "adult", "unknown"]
Obligation = Literal["label_ai_content", "embed_c2pa_manifest", "notify_subject",
                     "log_for_review"]


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class CountRange(_Strict):
    min: int | None = Field(default=None, ge=0)
    max: int | None = Field(default=None, ge=0)

    def contains(self, n: int) -> bool:
        return (self.min is None or n >= self.min) and (self.max is None or n <= self.max)


class When(_Strict):
    """Conditions; every one given must hold. Omitted means "any"."""

    operation: list[Operation] | None = None
    operation_not: list[Operation] | None = None
    content_any: list[ContentCategory] | None = None  # effective content intersects
    content_none: list[ContentCategory] | None = None  # effective content avoids all
    identity: list[Identity] | None = None
    identity_not: list[Identity] | None = None
    subject_status: list[SubjectStatus] | None = None
    role: list[Role] | None = None
    age_band: list[AgeBand] | None = None
    source: list[Literal["image", "prompt"]] | None = None
    app_id: list[str] | None = None
    face_count: CountRange | None = None
    grant_purpose: list[str] | None = None  # the covering grant's purpose


class Rule(_Strict):
    id: str = Field(pattern=r"^[a-z][a-z0-9_.\-]{1,79}$")
    effect: Verdict
    scope: Literal["face", "request"] = "face"
    message: str = Field(min_length=1, max_length=300)
    when: When = Field(default_factory=When)
    obligations: list[Obligation] = Field(default_factory=list)

    @model_validator(mode="after")
    def _scope_fits(self) -> Rule:
        face_only = ("identity", "identity_not", "subject_status", "role", "age_band", "source",
                     "grant_purpose")
        if self.scope == "request":
            used = [f for f in face_only if getattr(self.when, f) is not None]
            if used:
                raise ValueError(f"request-scoped rule cannot use face conditions: {used}")
        return self


class Policy(_Strict):
    policy: str = Field(min_length=1, max_length=80)
    version: str = Field(min_length=1, max_length=80)
    description: str = ""
    #: Obligations attached to every allowed decision.
    obligations: list[Obligation] = Field(default_factory=list)
    rules: list[Rule] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_ids(self) -> Policy:
        seen: set[str] = set()
        for rule in self.rules:
            if rule.id in seen:
                raise ValueError(f"duplicate rule id {rule.id!r}")
            seen.add(rule.id)
        return self
