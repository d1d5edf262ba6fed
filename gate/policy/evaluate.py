"""Policy evaluation: deny overrides needs_consent overrides allow; nothing matched = deny.

Every face gets the most severe effect of the face-scoped rules that match it, and a face
no rule matches is denied (``default.no_matching_rule``), so every face must be explicitly
allowed. Matching request-scoped rules add their effect once; they are the only voice when
there are no faces (and if none matches then, the request is denied too). The verdict is
the most severe of all these; the reasons are the matched rules whose effect equals it.
The core rules below are always evaluated first and no policy file can remove them: being
deny rules, no allow can override them.

Jurisdiction packs (``gate.policy.jurisdictions``) are *overlays* on a base policy: their
rules are evaluated with the base's, but a face or request no overlay rule speaks about is
not denied because of the overlay, and an overlay's allow never rescues anything (allow is
the least severe effect): it only adds its obligations to an allowed decision. So packs can
only tighten: the verdict of base + packs is the most severe of all their effects.

Formalities: a face whose identity is ``consented`` is checked against the formality
requirements of every document (base and packs) that apply to the request's operation,
content and the person's age; each requirement the covering grant's consent act did not
meet adds a ``needs_consent`` reason with the requirement's id.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from gate.policy.model import FormalityRequirement, Policy, Rule, When
from gate.types import Reason

SEVERITY = {"allow": 0, "needs_consent": 1, "deny": 2}

CORE_RULES: tuple[Rule, ...] = (
    Rule(id="core.minor_sexual", effect="deny",
         message="sexual content with a person who appears to be a minor is never allowed",
         when=When(content_any=["sexual"], age_band=["minor"])),
    Rule(id="core.age_unverified_sexual", effect="deny",
         message="sexual content needs an apparent adult: this face's age could not be "
                 "estimated (too small, or the age model is not available)",
         when=When(content_any=["sexual"], age_band=["unknown"], source=["image"],
                   identity=["self", "consented"])),
    Rule(id="core.protected_subject", effect="deny",
         message="this person has opted out: their face may not be used",
         when=When(identity=["protected"], subject_status=["protected"])),
)


@dataclass(frozen=True, slots=True)
class FaceFacts:
    face_ref: str
    identity: str
    role: str
    source: str = "image"
    subject_status: str | None = None
    age_band: str = "unknown"
    grant_purpose: str | None = None
    #: Formalities the covering grant's consent act met (``gate.policy.model.Formality``);
    #: empty when there is no grant or the grant recorded none.
    grant_formalities: frozenset[str] = frozenset()
    #: The enrolled person is a minor (enrolled by a guardian).
    subject_minor: bool = False

    @property
    def minor(self) -> bool:
        """The person is, or appears to be, a minor."""
        return self.subject_minor or self.age_band == "minor"


@dataclass(frozen=True, slots=True)
class RequestFacts:
    operation: str
    content: frozenset[str]  # effective: declared + detected from the prompt
    app_id: str
    faces: tuple[FaceFacts, ...] = ()
    user_id: str | None = None  # the app's end user, when the request names one


@dataclass(frozen=True, slots=True)
class Evaluation:
    verdict: str
    reasons: tuple[Reason, ...]
    obligations: tuple[str, ...] = field(default=())
    #: Codes of the jurisdiction packs that were applied, in canonical order.
    jurisdictions: tuple[str, ...] = field(default=())


class PolicyEngine(Protocol):
    @property
    def version(self) -> str: ...

    def evaluate(self, facts: RequestFacts) -> Evaluation: ...


def _in(values: Sequence[str] | None, value: str | None) -> bool:
    return values is None or value in values


def _request_matches(when: When, facts: RequestFacts) -> bool:
    return (
        _in(when.operation, facts.operation)
        and (when.operation_not is None or facts.operation not in when.operation_not)
        and (when.content_any is None or bool(facts.content & set(when.content_any)))
        and (when.content_none is None or not facts.content & set(when.content_none))
        and _in(when.app_id, facts.app_id)
        and _in(when.user_id, facts.user_id)
        and (when.face_count is None or when.face_count.contains(len(facts.faces)))
    )


def _face_matches(when: When, face: FaceFacts) -> bool:
    return (
        _in(when.identity, face.identity)
        and (when.identity_not is None or face.identity not in when.identity_not)
        and _in(when.subject_status, face.subject_status)
        and _in(when.role, face.role)
        and _in(when.age_band, face.age_band)
        and _in(when.source, face.source)
        and _in(when.grant_purpose, face.grant_purpose)
    )


class RulePolicyEngine:
    """Evaluates a validated ``Policy`` (plus the core rules) against request facts."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self.version = f"{policy.policy}@{policy.version}"

    def evaluate(self, facts: RequestFacts) -> Evaluation:
        return evaluate_documents(self.policy, (), facts)


def evaluate_documents(base: Policy, overlays: Sequence[Policy],
                       facts: RequestFacts) -> Evaluation:
    """Evaluate ``base`` (with the core rules and deny by default) and ``overlays``."""
    matched: list[tuple[Rule, str | None]] = []
    face_verdicts: list[str] = []  # one per face: face_refs need not be unique
    base_rules = [r for r in (*CORE_RULES, *base.rules) if _request_matches(r.when, facts)]
    overlay_rules = [r for doc in overlays for r in doc.rules
                     if _request_matches(r.when, facts)]
    requirements = [req for doc in (base, *overlays) for req in doc.formalities]
    for face in facts.faces:
        hits = [r for r in base_rules if r.scope == "face" and _face_matches(r.when, face)]
        if not hits:
            hits = [_NO_RULE]
        hits += [r for r in overlay_rules if r.scope == "face" and _face_matches(r.when, face)]
        hits += _missing_formalities(requirements, facts, face)
        matched += [(r, face.face_ref) for r in hits]
        face_verdicts.append(max((r.effect for r in hits), key=SEVERITY.__getitem__))
    base_request = [r for r in base_rules if r.scope == "request"]
    if not facts.faces and not base_request:
        base_request = [_NO_RULE]
    for rule in (*base_request, *(r for r in overlay_rules if r.scope == "request")):
        matched.append((rule, None))
    effects = face_verdicts + [r.effect for r, ref in matched if ref is None]
    verdict = max(effects, key=SEVERITY.__getitem__)
    reasons = tuple(
        Reason(rule_id=r.id, effect=r.effect, message=r.message, face_ref=ref)
        for r, ref in matched if r.effect == verdict
    )
    obligations: list[str] = []
    if verdict == "allow":
        tops = [o for doc in (base, *overlays) for o in doc.obligations]
        for ob in [*tops, *(o for r, _ in matched for o in r.obligations)]:
            if ob not in obligations:
                obligations.append(ob)
    return Evaluation(verdict=verdict, reasons=reasons, obligations=tuple(obligations))


def _missing_formalities(requirements: Sequence[FormalityRequirement], facts: RequestFacts,
                         face: FaceFacts) -> list[Rule]:
    """A needs_consent pseudo-rule per requirement a consented face's grant did not meet."""
    if face.identity != "consented":
        return []
    return [Rule.model_construct(id=req.id, effect="needs_consent", message=req.message,
                                 scope="face", when=When(), obligations=[], sources=[])
            for req in requirements
            if req.applies(facts.operation, facts.content, minor=face.minor)
            and req.formality not in face.grant_formalities]


_NO_RULE = Rule(id="default.no_matching_rule", effect="deny",
                message="no policy rule allows this; denied by default")
