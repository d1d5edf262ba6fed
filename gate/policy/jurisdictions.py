"""Jurisdiction packs composed with a base policy: the law of where the app runs, as policy.

A deployment (``GATE_JURISDICTIONS=cn,eu``) and each app declare jurisdiction codes; the
pack of each code (``policies/jurisdictions/<code>.yaml``, a policy document with a
``jurisdiction`` block) is composed with the base policy into a ``PolicySet``:

* **Most protective wins.** The verdict is the most severe effect of the base and every
  pack (deny > needs_consent > allow); a pack can only tighten (``evaluate_documents``).
* **Obligations are a union**, and label obligations get their parameters merged from
  every document that defines them (``PolicySet.labels``): every pack's label text appears,
  the minimum text size is the largest, placements are the ones every pack allows.
* **Formalities** are a union: a grant must have met every formality any pack requires for
  the operation, content and person (``PolicySet.required_formalities``).
* **Retention and takedown** take the shortest window and the shortest deadline.
* A state pack ``implies`` the federal one (``us-il`` brings ``us``), so the federal rules
  are never forgotten; every decision lists the packs that applied.

Unknown codes are a ``PolicyError`` naming the code and the valid ones.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gate.errors import PolicyError
from gate.policy.evaluate import Evaluation, RequestFacts, evaluate_documents
from gate.policy.load import load_policy
from gate.policy.model import JURISDICTION_CODES, Policy, Source
from gate.policy.packs import jurisdictions_dir


def parse_jurisdictions(value: str | Iterable[str] | None) -> tuple[str, ...]:
    """``"cn, eu"`` or ``["eu", "cn"]`` -> ``("cn", "eu")``: canonical order, no repeats.

    Codes are case-insensitive; empty items are ignored. An unknown code raises
    ``PolicyError`` naming it and the valid codes.
    """
    if value is None:
        return ()
    items = value.split(",") if isinstance(value, str) else list(value)
    codes: set[str] = set()
    for item in items:
        if not isinstance(item, str):
            raise PolicyError(f"a jurisdiction code is a string, not {type(item).__name__}; "
                              f"valid codes: {', '.join(JURISDICTION_CODES)}",
                              field="jurisdictions")
        code = item.strip().lower()
        if not code:
            continue
        if code not in JURISDICTION_CODES:
            shown = code if len(code) <= 40 else code[:40] + "..."
            raise PolicyError(f"unknown jurisdiction code {shown!r}; valid codes: "
                              f"{', '.join(JURISDICTION_CODES)}", field="jurisdictions")
        codes.add(code)
    return tuple(c for c in JURISDICTION_CODES if c in codes)


def pack_path(code: str, packs_dir: Path | None = None) -> Path:
    """Where the pack of ``code`` is: ``<packs_dir or policies/jurisdictions>/<code>.yaml``."""
    codes = parse_jurisdictions([code])
    if len(codes) != 1:
        raise PolicyError("an empty jurisdiction code; valid codes: "
                          f"{', '.join(JURISDICTION_CODES)}", field="jurisdictions")
    return (packs_dir or jurisdictions_dir()) / f"{codes[0]}.yaml"


def load_pack(code: str, packs_dir: Path | None = None) -> Policy:
    """The validated pack of ``code``; ``PolicyError`` if it is missing or is another pack."""
    path = pack_path(code, packs_dir)
    pack = load_policy(path)
    if pack.jurisdiction is None:
        raise PolicyError(f"{path}: not a jurisdiction pack (no 'jurisdiction' block)",
                          field="jurisdiction")
    if pack.jurisdiction.code != code:
        raise PolicyError(f"{path}: declares jurisdiction {pack.jurisdiction.code!r}, "
                          f"expected {code!r}", field="jurisdiction.code")
    return pack


# -- what a PolicySet answers -----------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Cited:
    """An item of a document with the sources it cites (``jurisdiction`` None: the base)."""

    id: str
    jurisdiction: str | None
    message: str
    sources: tuple[Source, ...]


@dataclass(frozen=True, slots=True)
class FormalityNeed:
    """A formality the consent act must meet, with the requirement that asks for it."""

    formality: str
    requirement: Cited


@dataclass(frozen=True, slots=True)
class RetentionRule:
    """Destroy biometric templates ``days`` after ``since`` (see ``RetentionWindow``)."""

    days: int
    since: str
    rule: Cited


@dataclass(frozen=True, slots=True)
class TakedownRule:
    """Remove reported content of ``scope`` within ``hours`` of a valid request."""

    hours: int
    scope: str
    applies_from: str | None
    rule: Cited


@dataclass(frozen=True, slots=True)
class DutyRule:
    """Something the deployment must do (not a per-request decision), with parameters."""

    parameters: Mapping[str, int | str]
    rule: Cited


@dataclass(frozen=True, slots=True)
class VisibleLabelSpec:
    """Merged parameters of ``label_visible``: every pack's text, the strictest size."""

    text: Mapping[str, str]  # locale -> text; 'en' and 'zh' always present
    positions: tuple[str, ...]  # allowed placements, preferred first
    min_text_height_ratio: float  # of the image's shorter side
    rules: tuple[Cited, ...]

    def text_for(self, locale: str | None) -> str:
        """The text for ``locale`` (``"zh-CN"`` -> ``zh``); English for any other locale."""
        language = (locale or "en").replace("_", "-").split("-")[0].lower()
        return self.text.get(language) or self.text["en"]

    def min_text_height_px(self, width_px: int, height_px: int) -> int:
        """Smallest text height in pixels that meets the rule for an image of this size."""
        if width_px <= 0 or height_px <= 0:
            raise PolicyError("an image size must be positive")
        return max(1, math.ceil(self.min_text_height_ratio * min(width_px, height_px)))


@dataclass(frozen=True, slots=True)
class MetadataLabelSpec:
    """Parameters of ``label_gb45438_metadata``: the GB 45438 implicit label."""

    fields: tuple[str, ...]
    label_value: str
    xmp_namespace: str
    xmp_property: str
    rules: tuple[Cited, ...]

    def values(self, *, content_producer: str, produce_id: str, content_propagator: str = "",
               propagate_id: str = "", reserved_code1: str = "",
               reserved_code2: str = "") -> dict[str, str]:
        """The label's field values, in the standard's order."""
        if not content_producer or not produce_id:
            raise PolicyError("the GB 45438 label needs ContentProducer and ProduceID")
        values = {"Label": self.label_value, "ContentProducer": content_producer,
                  "ProduceID": produce_id, "ReservedCode1": reserved_code1,
                  "ContentPropagator": content_propagator, "PropagateID": propagate_id,
                  "ReservedCode2": reserved_code2}
        return {name: values[name] for name in self.fields}


@dataclass(frozen=True, slots=True)
class MachineReadableSpec:
    """Parameters of ``mark_machine_readable``: the source type, written in every carrier."""

    digital_source_type: str
    carriers: tuple[str, ...]
    rules: tuple[Cited, ...]


@dataclass(frozen=True, slots=True)
class LabelPlan:
    """The parameters of every label obligation the policy set can attach."""

    visible: VisibleLabelSpec | None = None
    metadata: MetadataLabelSpec | None = None
    machine_readable: MachineReadableSpec | None = None


# -- the set -----------------------------------------------------------------------------
@dataclass(frozen=True, slots=True, eq=False)
class PolicySet:
    """A base policy and the jurisdiction packs composed with it (most protective wins).

    Satisfies ``PolicyEngine`` (``version``, ``evaluate``). Build it with
    ``load_policy_set`` or ``PolicyLibrary.policy_set``, which add the packs a selected
    pack implies; constructed directly, it takes ``packs`` as given (in any order).
    """

    base: Policy
    packs: tuple[Policy, ...] = ()
    version: str = field(init=False)
    jurisdictions: tuple[str, ...] = field(init=False)
    _labels: LabelPlan = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.base.jurisdiction is not None:
            raise PolicyError(f"the base policy {self.base.policy!r} is a jurisdiction pack "
                              f"({self.base.jurisdiction.code}); use a base policy such as "
                              "policies/default.yaml")
        by_code: dict[str, Policy] = {}
        for pack in self.packs:
            if pack.jurisdiction is None:
                raise PolicyError(f"{pack.policy!r} is not a jurisdiction pack")
            if pack.jurisdiction.code in by_code:
                raise PolicyError(f"the {pack.jurisdiction.code!r} pack is given twice")
            by_code[pack.jurisdiction.code] = pack
        packs = tuple(by_code[c] for c in JURISDICTION_CODES if c in by_code)
        object.__setattr__(self, "packs", packs)
        object.__setattr__(self, "jurisdictions", tuple(c for c in JURISDICTION_CODES
                                                        if c in by_code))
        object.__setattr__(self, "version", "+".join(
            [f"{self.base.policy}@{self.base.version}",
             *(f"{p.jurisdiction.code}@{p.version}" for p in packs if p.jurisdiction)]))
        object.__setattr__(self, "_labels", _merge_labels(self._documents()))

    # -- decisions ------------------------------------------------------------------------
    def evaluate(self, facts: RequestFacts) -> Evaluation:
        """The decision of the base and every pack; lists the packs that applied."""
        evaluation = evaluate_documents(self.base, self.packs, facts)
        return Evaluation(verdict=evaluation.verdict, reasons=evaluation.reasons,
                          obligations=evaluation.obligations,
                          jurisdictions=self.jurisdictions)

    # -- consent formalities ----------------------------------------------------------------
    def formality_needs(self, operation: str, content: Iterable[str], *,
                        minor: bool = False) -> tuple[FormalityNeed, ...]:
        """Every formality requirement that applies, with its id and sources."""
        facts_content = frozenset(content)
        return tuple(
            FormalityNeed(formality=req.formality, requirement=cite(doc, req.id, req.message,
                                                                      req.sources))
            for doc in self._documents() for req in doc.formalities
            if req.applies(operation, facts_content, minor=minor))

    def required_formalities(self, operation: str, content: Iterable[str], *,
                             minor: bool = False) -> frozenset[str]:
        """The formalities a consent act must meet for this operation and content.

        ``minor``: the person is, or appears to be, a minor (adds guardian consent where a
        pack requires it). A grant whose recorded formalities do not include all of these
        does not make the face ``consented``.
        """
        return frozenset(n.formality for n in self.formality_needs(operation, content,
                                                                   minor=minor))

    # -- obligations' parameters ------------------------------------------------------------
    def labels(self) -> LabelPlan:
        """Merged parameters of ``label_visible``, ``label_gb45438_metadata`` and
        ``mark_machine_readable``; a part is None when no document defines it."""
        return self._labels

    # -- retention, takedown, duties --------------------------------------------------------
    @property
    def retention(self) -> tuple[RetentionRule, ...]:
        return tuple(RetentionRule(days=w.days, since=w.since,
                                   rule=cite(doc, w.id, w.message, w.sources))
                     for doc in self._documents() for w in doc.retention)

    @property
    def retention_days(self) -> int | None:
        """Days after a subject's last interaction by which templates must be destroyed."""
        return _shortest(r.days for r in self.retention if r.since == "last_interaction")

    @property
    def retention_days_after_purpose_end(self) -> int | None:
        """Days after the collection's purpose ended by which templates must be destroyed."""
        return _shortest(r.days for r in self.retention if r.since == "purpose_end")

    @property
    def takedown(self) -> tuple[TakedownRule, ...]:
        return tuple(TakedownRule(hours=t.hours, scope=t.scope.strip(),
                                  applies_from=t.applies_from,
                                  rule=cite(doc, t.id, t.message, t.sources))
                     for doc in self._documents() for t in doc.takedown)

    @property
    def takedown_hours(self) -> int | None:
        """The shortest takedown deadline in hours, or None when no pack sets one."""
        return _shortest(t.hours for t in self.takedown)

    @property
    def duties(self) -> tuple[DutyRule, ...]:
        return tuple(DutyRule(parameters=dict(d.parameters),
                              rule=cite(doc, d.id, d.message, d.sources))
                     for doc in self._documents() for d in doc.duties)

    def explain(self) -> dict[str, Any]:
        """Everything that applies, as plain data (what ``gate policy explain`` prints)."""
        from gate.policy.explain import explain_policy_set

        return explain_policy_set(self)

    def _documents(self) -> tuple[Policy, ...]:
        return (self.base, *self.packs)


def _shortest(values: Iterable[int]) -> int | None:
    found = list(values)
    return min(found) if found else None


def cite(doc: Policy, item_id: str, message: str, refs: Sequence[str]) -> Cited:
    """An item of ``doc`` with its sources resolved."""
    return Cited(id=item_id, jurisdiction=doc.jurisdiction.code if doc.jurisdiction else None,
                 message=message.strip(), sources=tuple(doc.sources[r] for r in refs))


def _merge_labels(documents: Sequence[Policy]) -> LabelPlan:
    visible = [(d, d.labels.visible) for d in documents if d.labels and d.labels.visible]
    metadata = [(d, d.labels.metadata) for d in documents if d.labels and d.labels.metadata]
    marks = [(d, d.labels.machine_readable) for d in documents
             if d.labels and d.labels.machine_readable]
    plan = LabelPlan()
    if visible:
        ids = [v.id for _, v in visible]
        positions = [p for p in visible[0][1].positions
                     if all(p in v.positions for _, v in visible)]
        if not positions:
            raise PolicyError("the visible labels " + ", ".join(ids) + " allow no common "
                              "position; these packs cannot be combined")
        texts: dict[str, list[str]] = {}
        for _, v in visible:
            for loc, text in v.text.items():
                texts.setdefault(loc, []).append(text)
        plan = LabelPlan(visible=VisibleLabelSpec(
            text={loc: _union_text(texts[loc]) for loc in sorted(texts)},
            positions=tuple(positions),
            min_text_height_ratio=max(v.min_text_height_ratio for _, v in visible),
            rules=tuple(cite(d, v.id, v.message, v.sources) for d, v in visible)))
    if metadata:
        first = metadata[0][1]
        for _, other in metadata[1:]:
            if (other.xmp_namespace, other.xmp_property, other.label_value) != (
                    first.xmp_namespace, first.xmp_property, first.label_value):
                raise PolicyError(f"the metadata labels {first.id} and {other.id} disagree "
                                  "on the namespace, property or Label value")
        plan = LabelPlan(visible=plan.visible, metadata=MetadataLabelSpec(
            fields=tuple(first.fields), label_value=first.label_value,
            xmp_namespace=first.xmp_namespace, xmp_property=first.xmp_property,
            rules=tuple(cite(d, m.id, m.message, m.sources) for d, m in metadata)))
    if marks:
        first_mark = marks[0][1]
        for _, other_mark in marks[1:]:
            if other_mark.digital_source_type != first_mark.digital_source_type:
                raise PolicyError(f"the machine-readable marks {first_mark.id} and "
                                  f"{other_mark.id} disagree on the digital source type")
        carriers = [c for _, m in marks for c in m.carriers]
        plan = LabelPlan(visible=plan.visible, metadata=plan.metadata,
                         machine_readable=MachineReadableSpec(
                             digital_source_type=first_mark.digital_source_type,
                             carriers=tuple(dict.fromkeys(carriers)),
                             rules=tuple(cite(d, m.id, m.message, m.sources)
                                         for d, m in marks)))
    return plan


def _union_text(texts: Sequence[str]) -> str:
    """Every pack's text for one locale: a text another one contains is not repeated."""
    unique = list(dict.fromkeys(texts))
    kept = [t for t in unique if not any(t != other and t in other for other in unique)]
    return " | ".join(kept)


# -- loading ------------------------------------------------------------------------------
def load_policy_set(base: Path, jurisdictions: str | Iterable[str] | None = (), *,
                    packs_dir: Path | None = None) -> PolicySet:
    """The base policy at ``base`` composed with the packs of ``jurisdictions``.

    Packs a selected pack ``implies`` are added. Any invalid file or unknown code raises
    ``PolicyError`` (a start-up error).
    """
    return PolicyLibrary(base, packs_dir=packs_dir, preload=False).policy_set(jurisdictions)


class PolicyLibrary:
    """A base policy and the packs, each loaded and validated once; a set per selection.

    Built at start-up with ``preload=True`` (the default) it validates every pack, so a
    broken pack stops the gate even when no app selects it yet. ``policy_set(codes)`` is
    cached and thread-safe: use it per app (deployment codes united with the app's).
    """

    def __init__(self, base: Path, *, packs_dir: Path | None = None,
                 preload: bool = True) -> None:
        self.base_path = base
        self.packs_dir = packs_dir
        self.base = load_policy(base)
        self._packs: dict[str, Policy] = {}
        self._sets: dict[tuple[str, ...], PolicySet] = {}
        self._lock = threading.Lock()
        if preload:
            for code in JURISDICTION_CODES:
                self._pack(code)

    @property
    def version(self) -> str:
        """The base policy's version (a decision's also names its packs)."""
        return self.policy_set(()).version

    def evaluate(self, facts: RequestFacts) -> Evaluation:
        """The base policy alone (``PolicyEngine``); decisions use ``policy_set``."""
        return self.policy_set(()).evaluate(facts)

    def policy_set(self, jurisdictions: str | Iterable[str] | None = ()) -> PolicySet:
        """The set for these codes (plus the packs they imply)."""
        codes = self.expand(parse_jurisdictions(jurisdictions))
        with self._lock:
            found = self._sets.get(codes)
            if found is None:
                found = PolicySet(self.base, tuple(self._pack_locked(c) for c in codes))
                self._sets[codes] = found
            return found

    def expand(self, codes: Sequence[str]) -> tuple[str, ...]:
        """``codes`` and every code they imply, transitively, in canonical order."""
        wanted: set[str] = set()
        todo = list(codes)
        while todo:
            code = todo.pop()
            if code in wanted:
                continue
            wanted.add(code)
            pack = self._pack(code)
            assert pack.jurisdiction is not None
            todo += pack.jurisdiction.implies
        return tuple(c for c in JURISDICTION_CODES if c in wanted)

    def _pack(self, code: str) -> Policy:
        with self._lock:
            return self._pack_locked(code)

    def _pack_locked(self, code: str) -> Policy:
        pack = self._packs.get(code)
        if pack is None:
            pack = self._packs[code] = load_pack(code, self.packs_dir)
        return pack
