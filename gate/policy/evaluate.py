"""Policy evaluation: deny overrides needs_consent overrides allow; nothing matched = deny.

Every face gets the most severe effect of the face-scoped rules that match it, and a face
no rule matches is denied (``default.no_matching_rule``), so every face must be explicitly
allowed. Matching request-scoped rules add their effect once; they are the only voice when
there are no faces (and if none matches then, the request is denied too). The verdict is
the most severe of all these; the reasons are the matched rules whose effect equals it.
The core rules below are always evaluated first and no policy file can remove them: being
deny rules, no allow can override them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from gate.policy.model import Policy, Rule, When
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


class PolicyEngine(Protocol):
    version: str

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
        self._rules = CORE_RULES + tuple(policy.rules)

    def evaluate(self, facts: RequestFacts) -> Evaluation:
        matched: list[tuple[Rule, str | None]] = []
        face_verdicts: list[str] = []  # one per face: face_refs need not be unique
        request_rules = [r for r in self._rules if _request_matches(r.when, facts)]
        for face in facts.faces:
            hits = [r for r in request_rules if r.scope == "face" and _face_matches(r.when, face)]
            if not hits:
                matched.append((_NO_RULE, face.face_ref))
                face_verdicts.append("deny")
                continue
            matched += [(r, face.face_ref) for r in hits]
            face_verdicts.append(max((r.effect for r in hits), key=SEVERITY.__getitem__))
        for rule in request_rules:
            if rule.scope == "request":
                matched.append((rule, None))
        effects = face_verdicts + [r.effect for r, ref in matched if ref is None]
        if not effects:
            matched.append((_NO_RULE, None))
            effects = ["deny"]
        verdict = max(effects, key=SEVERITY.__getitem__)
        reasons = tuple(
            Reason(rule_id=r.id, effect=r.effect, message=r.message, face_ref=ref)
            for r, ref in matched if r.effect == verdict
        )
        obligations: list[str] = []
        if verdict == "allow":
            for ob in [*self.policy.obligations, *(o for r, _ in matched for o in r.obligations)]:
                if ob not in obligations:
                    obligations.append(ob)
        return Evaluation(verdict=verdict, reasons=reasons, obligations=tuple(obligations))


_NO_RULE = Rule(id="default.no_matching_rule", effect="deny",
                message="no policy rule allows this; denied by default")
