"""The policy language: a pydantic model, exported as JSON Schema for ``policies/*.yaml``.

A policy is a list of rules. Each rule has an id, an effect, a scope (``face``: evaluated
for every face, including enrolled names found in the prompt; ``request``: once) and a
``when`` block whose conditions must all hold. Lists mean "any of"; an omitted condition
means "any". The models are strict: no type coercion, no unknown fields, no empty lists.
Semantic checks name the offending field in the error context (``ctx["loc"]``) so the
loader can point at its line.

The same document can also carry what the law of a place adds (a *jurisdiction pack*,
``policies/jurisdictions/<code>.yaml``, has a ``jurisdiction`` block): the consent
*formalities* a grant must record (``formalities``), the parameters of the labels its
obligations ask for (``labels``), retention windows for biometric templates
(``retention``), takedown deadlines (``takedown``), duties of the deployment that are not
per-request decisions (``duties``), and the legal ``sources`` every one of these cites.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.config import JsonDict
from pydantic_core import PydanticCustomError

from gate.types import FORMALITIES as FORMALITIES  # re-exported: defined with the grants
from gate.types import JURISDICTION_CODES as JURISDICTION_CODES
from gate.types import ContentCategory, Identity, Operation, Role, SubjectStatus, Verdict
from gate.types import Formality as Formality
from gate.types import JurisdictionCode as JurisdictionCode

AgeBand = Literal["minor", "adult", "unknown"]
FaceSource = Literal["image", "prompt"]
Obligation = Literal["label_ai_content", "embed_c2pa_manifest", "notify_subject",
                     "log_for_review", "label_visible", "label_gb45438_metadata",
                     "mark_machine_readable"]
#: Obligations whose parameters a document's ``labels`` section must give (obligation ->
#: the ``labels`` field that holds them).
LABEL_OBLIGATIONS: dict[str, str] = {"label_visible": "visible",
                                     "label_gb45438_metadata": "metadata",
                                     "mark_machine_readable": "machine_readable"}

Locale = Literal["en", "zh"]
LabelPosition = Literal["top_left", "top_right", "bottom_left", "bottom_right", "top",
                        "bottom", "left", "right"]

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


ID_PATTERN = r"^[a-z][a-z0-9_.\-]{1,79}$"
_Id = Annotated[str, Field(pattern=ID_PATTERN)]
#: A key of the document's ``sources``.
SourceRef = Annotated[str, Field(pattern=ID_PATTERN)]
_Message = Annotated[str, Field(min_length=1, max_length=500)]


def _sources_field() -> Any:
    return Field(default_factory=list, description="ids of the legal sources (keys of the "
                 "document's 'sources') this item implements; required in jurisdiction packs")


class Rule(_Strict):
    model_config = ConfigDict(json_schema_extra={
        "allOf": [_REQUEST_SCOPE_SCHEMA, _OBLIGATIONS_SCHEMA]})

    id: str = Field(pattern=ID_PATTERN,
                    description="stable id, reported in every decision this rule makes")
    effect: Verdict
    scope: Literal["face", "request"] = "face"
    message: str = Field(min_length=1, max_length=300,
                         description="shown to the caller; never personal data")
    when: When = Field(default_factory=When)
    obligations: list[Obligation] = Field(
        default_factory=list, description="attached to the decision when it is allow "
                                          "(allow rules only)")
    sources: list[SourceRef] = _sources_field()

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


# -- what a jurisdiction adds ----------------------------------------------------------
class Source(_Strict):
    """A legal source: the provision an item of the document implements."""

    title: str = Field(min_length=1, max_length=200, description="the instrument's name")
    article: str = Field(min_length=1, max_length=120, description="e.g. 'Art. 29'")
    url: str = Field(pattern=r"^https?://\S+$", max_length=400)
    in_force: str | None = Field(default=None, max_length=40,
                                 description="the date the provision applies from")
    verified: Literal["primary_text", "secondary_sources", "unconfirmed"] = Field(
        description="how the citation was checked: against the provision's own text, "
                    "against consistent secondary sources only, or not confirmed")
    note: str = Field(default="", max_length=1000)


class Jurisdiction(_Strict):
    """Marks the document as the pack of one jurisdiction (``policies/jurisdictions/``)."""

    code: JurisdictionCode
    name: str = Field(min_length=1, max_length=120)
    implies: list[JurisdictionCode] = Field(
        default_factory=list, description="packs that always apply together with this one "
                                          "(a US state's pack implies the federal 'us' pack)")

    @model_validator(mode="after")
    def _not_itself(self) -> Jurisdiction:
        if self.code in self.implies:
            raise located_error("a jurisdiction cannot imply itself", "implies")
        return self


class FormalityRequirement(_Strict):
    """A grant covers a face only if its consent act met this formality (when it applies)."""

    id: _Id
    formality: Formality
    message: _Message
    operation: AnyOf[Operation] = _cond("applies to these operations (omitted: every one)")
    content_any: AnyOf[ContentCategory] = _cond(
        "applies when the effective content includes one of these (omitted: any content)")
    minors_only: bool = Field(default=False, description="applies only to a person who is, "
                              "or appears to be, a minor")
    sources: list[SourceRef] = _sources_field()

    def applies(self, operation: str, content: frozenset[str], *, minor: bool) -> bool:
        return ((self.operation is None or operation in self.operation)
                and (self.content_any is None or bool(content & set(self.content_any)))
                and (minor or not self.minors_only))


class VisibleLabel(_Strict):
    """Parameters of obligation ``label_visible``: text drawn on the output's pixels."""

    id: _Id
    text: dict[Locale, Annotated[str, Field(min_length=1, max_length=80)]] = Field(
        description="the label's text per locale; 'en' and 'zh' are required")
    positions: list[LabelPosition] = Field(
        min_length=1, description="where the label may be placed; the first is preferred")
    min_text_height_ratio: float = Field(
        gt=0, le=0.5, description="minimum text height as a fraction of the image's "
                                  "shorter side")
    message: _Message
    sources: list[SourceRef] = _sources_field()

    @model_validator(mode="after")
    def _complete(self) -> VisibleLabel:
        missing = [loc for loc in ("en", "zh") if loc not in self.text]
        if missing:
            raise located_error(f"a visible label needs text for every locale ({missing[0]!r} "
                                "is missing)", "text")
        if len(set(self.positions)) != len(self.positions):
            raise located_error("positions are listed twice", "positions")
        return self


#: The fields of GB 45438-2025's implicit metadata label, in the order it lists them.
GB45438_FIELDS: tuple[str, ...] = ("Label", "ContentProducer", "ProduceID", "ReservedCode1",
                                   "ContentPropagator", "PropagateID", "ReservedCode2")
Gb45438Field = Literal["Label", "ContentProducer", "ProduceID", "ReservedCode1",
                       "ContentPropagator", "PropagateID", "ReservedCode2"]


class MetadataLabel(_Strict):
    """Parameters of obligation ``label_gb45438_metadata``: the implicit metadata label."""

    id: _Id
    scheme: Literal["gb45438"]
    fields: list[Gb45438Field] = Field(description="all seven fields, in the standard's order")
    label_value: Literal["1", "2", "3"] = Field(
        default="1", description="value of field Label: '1' generated by AI, '2' possibly, "
                                 "'3' suspected")
    xmp_namespace: str = Field(pattern=r"^https?://\S+$")
    xmp_property: str = Field(default="AIGC", pattern=r"^[A-Za-z][A-Za-z0-9]{0,40}$")
    message: _Message
    sources: list[SourceRef] = _sources_field()

    @model_validator(mode="after")
    def _all_fields(self) -> MetadataLabel:
        if tuple(self.fields) != GB45438_FIELDS:
            raise located_error("fields must be exactly " + ", ".join(GB45438_FIELDS)
                                + ", in this order", "fields")
        return self


class MachineReadableMark(_Strict):
    """Parameters of obligation ``mark_machine_readable`` (e.g. EU AI Act Art. 50(2))."""

    id: _Id
    digital_source_type: str = Field(pattern=r"^https?://\S+$",
                                     description="IPTC digital source type written as the mark")
    carriers: list[Literal["xmp", "c2pa"]] = Field(
        min_length=1, description="where the mark must be written; every one is required")
    message: _Message
    sources: list[SourceRef] = _sources_field()


class Labels(_Strict):
    """Parameters of the label obligations this document attaches."""

    visible: VisibleLabel | None = None
    metadata: MetadataLabel | None = None
    machine_readable: MachineReadableMark | None = None


class RetentionWindow(_Strict):
    """Biometric templates are destroyed no later than ``days`` after ``since``."""

    id: _Id
    data: Literal["biometric_templates"] = "biometric_templates"
    days: int = Field(ge=0, le=36_500)
    since: Literal["last_interaction", "purpose_end"] = Field(
        description="the subject's last interaction with the deployment, or the end of the "
                    "purpose the template was collected for")
    message: _Message
    sources: list[SourceRef] = _sources_field()


class Takedown(_Strict):
    """Reported content of ``scope`` must be removed within ``hours`` of a valid request."""

    id: _Id
    hours: int = Field(ge=1, le=8_760)
    scope: str = Field(min_length=1, max_length=300)
    applies_from: str | None = Field(default=None, max_length=40)
    message: _Message
    sources: list[SourceRef] = _sources_field()


class Duty(_Strict):
    """Something the deployment must do that is not a per-request decision."""

    id: _Id
    message: _Message
    parameters: dict[Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,40}$")],
                     int | str] = Field(default_factory=dict)
    sources: list[SourceRef] = _sources_field()


#: Rule id prefixes of the engine's own rules (``core.*``, ``default.no_matching_rule``).
RESERVED_ID_PREFIXES: tuple[str, ...] = ("core.", "default.")
_RESERVED_ID_SCHEMA: JsonDict = {"properties": {"rules": {"items": {"properties": {"id": {
    "not": {"pattern": r"^(core|default)\."}}}}}}}


_RULES_UNLESS_PACK_SCHEMA: JsonDict = {
    "if": {"properties": {"jurisdiction": {"type": "object"}}, "required": ["jurisdiction"]},
    "else": {"required": ["rules"], "properties": {"rules": {"minItems": 1}}},
}


class Policy(_Strict):
    model_config = ConfigDict(json_schema_extra={
        "description": "A consent-gate policy, or (with 'jurisdiction') a jurisdiction pack. "
                       "Checked by the loader, not expressible in JSON Schema: ids are "
                       "unique, a pack's ids start with its code and a dot, every item of a "
                       "pack cites a source, cited sources exist, and a label obligation "
                       "needs its 'labels' parameters.",
        "allOf": [_RESERVED_ID_SCHEMA, _RULES_UNLESS_PACK_SCHEMA]})

    policy: str = Field(min_length=1, max_length=80)
    version: str = Field(min_length=1, max_length=80)
    description: str = ""
    jurisdiction: Jurisdiction | None = Field(
        default=None, description="present in a jurisdiction pack (policies/jurisdictions/)")
    #: Obligations attached to every allowed decision.
    obligations: list[Obligation] = Field(
        default_factory=list, description="attached to every allowed decision")
    rules: list[Rule] = Field(default_factory=list,
                              description="at least one, except in a jurisdiction pack")
    formalities: list[FormalityRequirement] = Field(
        default_factory=list, description="consent formalities a grant must have recorded "
                                          "for its face to count as consented")
    labels: Labels | None = Field(default=None,
                                  description="parameters of the label obligations")
    retention: list[RetentionWindow] = Field(default_factory=list)
    takedown: list[Takedown] = Field(default_factory=list)
    duties: list[Duty] = Field(default_factory=list)
    sources: dict[SourceRef, Source] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _ids(self) -> Policy:
        if not self.rules and self.jurisdiction is None:
            raise located_error("a policy needs at least one rule (only a jurisdiction pack "
                                "may have none)", "rules")
        seen: set[str] = set()
        for loc, item_id, _ in self.cited_items():
            what = "rule id" if loc[0] == "rules" else "id"
            if item_id.startswith(RESERVED_ID_PREFIXES):
                prefix = item_id.split(".")[0] + "."
                raise located_error(f"{what}s starting with {prefix!r} are reserved for the "
                                    "engine's own rules", *loc, "id")
            if item_id in seen:
                raise located_error(f"duplicate {what} {item_id!r}", *loc, "id")
            seen.add(item_id)
        return self

    @model_validator(mode="after")
    def _citations(self) -> Policy:
        code = self.jurisdiction.code if self.jurisdiction is not None else None
        for loc, item_id, refs in self.cited_items():
            if code is not None and not item_id.startswith(f"{code}."):
                raise located_error(f"ids in the {code!r} pack start with '{code}.'", *loc,
                                    "id")
            if code is not None and not refs:
                raise located_error("every item of a jurisdiction pack cites at least one "
                                    "source", *loc, "sources")
            for i, ref in enumerate(refs):
                if ref not in self.sources:
                    known = ", ".join(sorted(self.sources)) or "none"
                    raise located_error(f"unknown source {ref!r} (sources: {known})", *loc,
                                        "sources", i)
        return self

    @model_validator(mode="after")
    def _label_parameters(self) -> Policy:
        used: list[tuple[tuple[str | int, ...], str]] = [
            (("obligations", i), ob) for i, ob in enumerate(self.obligations)]
        used += [(("rules", r, "obligations", i), ob) for r, rule in enumerate(self.rules)
                 for i, ob in enumerate(rule.obligations)]
        for loc, ob in used:
            field = LABEL_OBLIGATIONS.get(ob)
            if field is not None and (self.labels is None
                                      or getattr(self.labels, field) is None):
                raise located_error(f"obligation {ob!r} needs its parameters in "
                                    f"'labels.{field}'", *loc)
        return self

    def cited_items(self) -> list[tuple[tuple[str | int, ...], str, list[str]]]:
        """``(location, id, source ids)`` of every item that has an id, in file order."""
        items: list[tuple[tuple[str | int, ...], str, list[str]]] = [
            (("rules", i), r.id, r.sources) for i, r in enumerate(self.rules)]
        items += [(("formalities", i), f.id, f.sources) for i, f in enumerate(self.formalities)]
        if self.labels is not None:
            for name in ("visible", "metadata", "machine_readable"):
                label = getattr(self.labels, name)
                if label is not None:
                    items.append((("labels", name), label.id, label.sources))
        for section in ("retention", "takedown", "duties"):
            items += [((section, i), x.id, x.sources)
                      for i, x in enumerate(getattr(self, section))]
        return items
