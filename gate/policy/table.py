"""Table tests for policies: request facts in, expected verdict and rule ids out.

A table file (``policies/tests/<policy>.yaml``) is a YAML list of cases::

    - name: own face, sexual content
      facts:
        operation: face_swap          # required
        content: [sexual]             # default [general]
        app_id: demo-app              # default "test-app"
        user_id: u1                   # default none
        faces:                        # default []
          - {identity: self, role: target, subject_status: consenting,
             age_band: adult, source: image, grant_purpose: null}
      expect:
        verdict: allow
        rule_ids: [allow.self]        # the set of rule ids among the reasons
        obligations: [label_ai_content]   # optional; compared as a set

The policy for ``<dir>/tests/<name>.yaml`` is ``<dir>/<name>.yaml`` unless given.

Jurisdiction tables, ``<dir>/tests/jurisdictions/<code>[+<code>...].yaml``, test the packs
their name lists (``cn+eu.yaml``: China and the EU, plus the packs they imply) composed
with the base policy ``<dir>/default.yaml``. Their cases may also give a face's
``grant_formalities`` and ``subject_minor``, a case-level ``base`` (another policy of
``<dir>``, by name) and ``jurisdictions`` (instead of the file's), and may expect the
decision's ``jurisdictions`` (the packs applied, in canonical order).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, RootModel, model_validator

from gate.errors import PolicyError
from gate.policy.evaluate import FaceFacts, PolicyEngine, RequestFacts
from gate.policy.jurisdictions import PolicyLibrary, parse_jurisdictions
from gate.policy.load import load_policy, load_yaml, read_text, validate_document
from gate.policy.model import (
    AgeBand,
    FaceSource,
    Formality,
    JurisdictionCode,
    Obligation,
    Policy,
    located_error,
)
from gate.policy.packs import JURISDICTIONS_NAME, jurisdictions_dir
from gate.types import ContentCategory, Identity, Operation, Role, SubjectStatus, Verdict


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)


class FaceCase(_Strict):
    identity: Identity
    role: Role
    subject_status: SubjectStatus | None = None
    age_band: AgeBand = "unknown"
    source: FaceSource = "image"
    grant_purpose: str | None = None
    grant_formalities: list[Formality] = Field(default_factory=list)
    subject_minor: bool = False


def _general() -> list[ContentCategory]:
    return ["general"]


class FactsCase(_Strict):
    operation: Operation
    content: list[ContentCategory] = Field(default_factory=_general, min_length=1)
    app_id: str = Field(default="test-app", min_length=1)
    user_id: str | None = None
    faces: list[FaceCase] = Field(default_factory=list, max_length=16)

    def to_facts(self) -> RequestFacts:
        faces = tuple(FaceFacts(face_ref=f"f{i}", identity=f.identity, role=f.role,
                                source=f.source, subject_status=f.subject_status,
                                age_band=f.age_band, grant_purpose=f.grant_purpose,
                                grant_formalities=frozenset(f.grant_formalities),
                                subject_minor=f.subject_minor)
                      for i, f in enumerate(self.faces))
        return RequestFacts(operation=self.operation, content=frozenset(self.content),
                            app_id=self.app_id, faces=faces, user_id=self.user_id)


class Expect(_Strict):
    verdict: Verdict
    rule_ids: list[str] = Field(min_length=1)
    obligations: list[Obligation] | None = None
    jurisdictions: list[JurisdictionCode] | None = None  # the packs applied, in order


class Case(_Strict):
    name: str = Field(min_length=1, max_length=200)
    base: str | None = Field(default=None, pattern=r"^[a-z0-9][a-z0-9_-]{0,79}$",
                             description="another base policy of the table's folder")
    jurisdictions: list[JurisdictionCode] | None = None  # instead of the file's packs
    facts: FactsCase
    expect: Expect


class Table(RootModel[Annotated[list[Case], Field(min_length=1)]]):
    model_config = ConfigDict(frozen=True, strict=True)

    @model_validator(mode="after")
    def _unique_names(self) -> Table:
        seen: set[str] = set()
        for i, case in enumerate(self.root):
            if case.name in seen:
                raise located_error(f"duplicate case name {case.name!r}", i, "name")
            seen.add(case.name)
        return self


@dataclass(frozen=True, slots=True)
class CaseResult:
    """The outcome of one case; ``line`` is where the case starts in the table file."""

    name: str
    line: int
    expected_verdict: str
    expected_rule_ids: tuple[str, ...]
    verdict: str
    rule_ids: tuple[str, ...]  # sorted, unique
    obligations_ok: bool = True
    jurisdictions_ok: bool = True

    @property
    def passed(self) -> bool:
        return (self.verdict == self.expected_verdict
                and self.rule_ids == self.expected_rule_ids and self.obligations_ok
                and self.jurisdictions_ok)

    def describe(self) -> str:
        if self.passed:
            return f"{self.verdict} {list(self.rule_ids)}"
        extra = "" if self.obligations_ok else " (obligations differ)"
        extra += "" if self.jurisdictions_ok else " (jurisdictions differ)"
        return (f"expected {self.expected_verdict} {list(self.expected_rule_ids)}, "
                f"got {self.verdict} {list(self.rule_ids)}{extra}")


def load_table(path: Path) -> list[tuple[int, Case]]:
    """The cases of a table file, each with the line it starts on."""
    name = str(path)
    data, node = load_yaml(read_text(path), name)
    if not isinstance(data, list):
        raise PolicyError(f"{name}:{node.start_mark.line + 1}: a policy table is a list "
                          "of cases {name, facts, expect}")
    table = validate_document(Table, data, node, name)
    return [(item.start_mark.line + 1, case) for item, case in zip(node.value, table.root,
                                                                   strict=True)]


def policy_for_table(table_path: Path) -> Path:
    """``<dir>/tests/<name>.yaml`` tests ``<dir>/<name>.yaml``."""
    if table_path.parent.name != "tests":
        raise PolicyError(f"{table_path}: cannot infer its policy (not in a 'tests' folder); "
                          "name the policy explicitly")
    return table_path.parent.parent / table_path.name


@dataclass(frozen=True, slots=True)
class TableTarget:
    """What a table tests: a base policy and the jurisdiction packs composed with it."""

    base: Path
    jurisdictions: tuple[str, ...] = ()
    packs_dir: Path | None = None  # None: the installed packs (gate.policy.packs)


def is_jurisdiction_table(table_path: Path) -> bool:
    return (table_path.parent.name == JURISDICTIONS_NAME
            and table_path.parent.parent.name == "tests")


def target_for_table(table_path: Path, *, base: Path | None = None,
                     jurisdictions: str | None = None) -> TableTarget:
    """The target of a table: inferred from its path, or given (``base``, ``jurisdictions``).

    ``<dir>/tests/<name>.yaml`` -> base ``<dir>/<name>.yaml``, no packs;
    ``<dir>/tests/jurisdictions/cn+eu.yaml`` -> base ``<dir>/default.yaml``, packs cn and eu
    from ``<dir>/jurisdictions/``.
    """
    if is_jurisdiction_table(table_path):
        root = table_path.parent.parent.parent
        codes = parse_jurisdictions(jurisdictions if jurisdictions is not None
                                    else table_path.stem.split("+"))
        return TableTarget(base or root / "default.yaml", codes, root / JURISDICTIONS_NAME)
    policy = base or policy_for_table(table_path)
    local = policy.parent / JURISDICTIONS_NAME
    return TableTarget(policy, parse_jurisdictions(jurisdictions),
                       local if local.is_dir() else None)


def run_case(engine: PolicyEngine, line: int, case: Case) -> CaseResult:
    evaluation = engine.evaluate(case.facts.to_facts())
    expected_obligations = case.expect.obligations
    expected_jurisdictions = case.expect.jurisdictions
    return CaseResult(
        name=case.name, line=line, expected_verdict=case.expect.verdict,
        expected_rule_ids=tuple(sorted(set(case.expect.rule_ids))),
        verdict=evaluation.verdict,
        rule_ids=tuple(sorted({r.rule_id for r in evaluation.reasons})),
        obligations_ok=(expected_obligations is None
                        or set(expected_obligations) == set(evaluation.obligations)),
        jurisdictions_ok=(expected_jurisdictions is None
                          or tuple(expected_jurisdictions) == evaluation.jurisdictions),
    )


def run_table(policy_path: Path, table_path: Path, *,
              jurisdictions: str | None = None) -> list[CaseResult]:
    """Evaluate every case of ``table_path`` against the policy at ``policy_path``."""
    return run_target(target_for_table(table_path, base=policy_path,
                                       jurisdictions=jurisdictions), table_path)


def run_target(target: TableTarget, table_path: Path) -> list[CaseResult]:
    """Evaluate every case of ``table_path`` against ``target`` (cases may override it)."""
    libraries: dict[Path, PolicyLibrary] = {}

    def engine_for(case: Case) -> PolicyEngine:
        base = target.base if case.base is None else target.base.parent / f"{case.base}.yaml"
        if base not in libraries:
            libraries[base] = PolicyLibrary(base, packs_dir=target.packs_dir, preload=False)
        codes = target.jurisdictions if case.jurisdictions is None else case.jurisdictions
        return libraries[base].policy_set(codes)

    return [run_case(engine_for(case), line, case) for line, case in load_table(table_path)]


def covered_documents(target: TableTarget, table_path: Path) -> list[Policy]:
    """The documents whose every rule the table should exercise: the base policy for a
    plain table, the pack for a one-pack jurisdiction table, none for a composition table."""
    if not is_jurisdiction_table(table_path):
        return [load_policy(target.base)]
    if "+" in table_path.stem:
        return []
    return [load_policy((target.packs_dir or jurisdictions_dir()) / f"{table_path.stem}.yaml")]


def uncovered_rules(policy: Policy, cases: list[tuple[int, Case]]) -> list[str]:
    """Ids of the policy's rules and formality requirements that no case expects."""
    covered = {rule_id for _, case in cases for rule_id in case.expect.rule_ids}
    ids = [rule.id for rule in policy.rules] + [f.id for f in policy.formalities]
    return [i for i in ids if i not in covered]
