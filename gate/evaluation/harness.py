"""Recognition efficacy under evasion: false-allow, false-block, wrong subject, misses.

Protocol (per dataset, i.e. per folder of ``<identity>/<photo>``; see docs/accuracy.md):

1. Near-identical photos of one identity are collapsed to one (16x16 average hash,
   Hamming distance <= 4), so a probe is never a copy of an enrolment photo.
2. Each identity gets up to :data:`RESERVED_FOR_ENROLMENT` enrolment photos (a seeded
   choice among the photos in which the gate's detector finds exactly one face). They are
   never probed, whatever the enrolment count, so the 1-photo and 3-photo runs check the
   very same probes.
3. Identities with too few photos, plus a seeded ~20%, are ``stranger``s: never enrolled.
   The rest alternate ``protected`` / ``consenting`` (seeded order). A consenting subject
   gets a grant for app ``eval``, operation ``face_swap``, content ``general``.
4. One gate per (dataset, enrolment count) comes from ``gate_factory(tmpdir)``; every
   probe photo, under every transform, goes through ``FaceGate.check`` as a ``face_swap``
   target for app ``eval``, on each gate.

Counts per (dataset, enrolment count, transform) are defined in :class:`CaseCounts`.
"""

from __future__ import annotations

import os
import tempfile
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from gate.errors import EnrollmentError, InvalidImage, InvalidRequest
from gate.evaluation.calibrate import IMAGE_SUFFIXES, Photo, list_photos
from gate.evaluation.transforms import (
    NEEDS_GEOMETRY,
    NEEDS_OTHERS,
    TRANSFORMS,
    FaceGeometry,
    TransformContext,
    decode_bgr,
    locate_face,
    resolve,
)
from gate.types import Decision, GateRequest, ImageInput, Requester

if TYPE_CHECKING:
    from rich.table import Table

    from gate.engine import FaceGate

Role = Literal["protected", "consenting", "stranger"]
GateFactory = Callable[[Path], "FaceGate"]
Progress = Callable[[str], None]

#: Enrolment photos set aside per identity (the most any run enrols from).
RESERVED_FOR_ENROLMENT = 3
#: Share of identities held out as never-enrolled strangers (at least one).
STRANGER_SHARE = 0.2
#: Average-hash Hamming distance at or below which two photos are near-identical.
NEAR_DUPLICATE_BITS = 4
EVAL_APP = "eval"
REQUESTER = Requester(app_id=EVAL_APP)
#: ``--quick``: at most this many probes per identity.
QUICK_PROBES_PER_IDENTITY = 2


# -- the plan ---------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Probe:
    identity: str
    role: Role
    path: Path
    ref: str  # "<set>/<identity folder>/<file>": stable across machines


@dataclass(slots=True)
class DatasetPlan:
    """Who is enrolled how, and which photos are probed, for one dataset."""

    name: str
    roles: dict[str, Role]
    enrolment: dict[str, list[Path]]  # identity -> reserved enrolment photos (ordered)
    probes: list[Probe]
    near_duplicates_dropped: int
    finder: FaceFinder

    def identities(self, role: Role) -> list[str]:
        return sorted(i for i, r in self.roles.items() if r == role)

    def summary(self) -> dict[str, Any]:
        per_role = Counter(p.role for p in self.probes)
        return {
            "name": self.name,
            "identities": {r: len(self.identities(r))
                           for r in ("protected", "consenting", "stranger")},
            "probes": {r: per_role.get(r, 0) for r in ("protected", "consenting", "stranger")},
            "near_duplicates_dropped": self.near_duplicates_dropped,
            "protected": self.identities("protected"),
            "consenting": self.identities("consenting"),
            "stranger": self.identities("stranger"),
        }


def discover_sets(root: Path) -> list[Path]:
    """``root`` itself when it holds identity folders of photos, else its sub-folders
    that do (e.g. ``../shared/faces`` -> ``natural_small``, ``glint24``)."""
    def holds_photos(folder: Path) -> bool:
        return any(f.suffix.lower() in IMAGE_SUFFIXES for f in folder.iterdir() if f.is_file())

    subdirs = sorted(p for p in root.iterdir() if p.is_dir())
    if any(holds_photos(d) for d in subdirs):
        return [root]
    return [d for d in subdirs if any(holds_photos(s) for s in d.iterdir() if s.is_dir())]


def average_hash(image_bgr: np.ndarray) -> np.ndarray:
    import cv2

    grey = cv2.cvtColor(image_bgr, cv2.COLOR_BGR2GRAY)
    small = cv2.resize(grey, (16, 16), interpolation=cv2.INTER_AREA).astype(np.float32)
    bits: np.ndarray = (small > small.mean()).ravel()
    return bits


def _seed_of(*parts: object) -> int:
    return zlib.crc32("/".join(str(p) for p in parts).encode())


class FaceFinder:
    """The gate's detector on the clean photos, run lazily and remembered."""

    def __init__(self, detector: Any, min_face_px: int) -> None:
        self.detector = detector
        self.min_face_px = min_face_px
        self._detections: dict[Path, list[Any]] = {}
        self._geometry: dict[Path, FaceGeometry | None] = {}

    def _detect(self, path: Path) -> tuple[np.ndarray, list[Any]]:
        image = decode_bgr(path.read_bytes())
        if path not in self._detections:
            self._detections[path] = list(self.detector.detect(image))
        return image, self._detections[path]

    def usable_faces(self, path: Path) -> int:
        """Faces at least ``min_face_px`` (an enrolment photo must show exactly one)."""
        return sum(d.size_px >= self.min_face_px for d in self._detect(path)[1])

    def geometry(self, path: Path) -> FaceGeometry | None:
        """Largest face, with a padded retry for tight crops (see ``locate_face``)."""
        if path not in self._geometry:
            image, dets = self._detect(path)
            self._geometry[path] = locate_face(self.detector, image, detections=dets)
        return self._geometry[path]


def plan_dataset(set_root: Path, finder: FaceFinder, *, seed: int,
                 max_probes_per_identity: int | None = None) -> DatasetPlan:
    """Split one dataset into roles, enrolment photos and probes (see module docstring)."""
    by_identity: dict[str, list[Photo]] = {}
    for photo in list_photos([set_root]):
        by_identity.setdefault(photo.identity, []).append(photo)
    kept: dict[str, list[Path]] = {}
    dropped = 0
    for identity, photos in sorted(by_identity.items()):
        hashes: list[np.ndarray] = []
        for photo in photos:
            h = average_hash(decode_bgr(photo.path.read_bytes()))
            if any(int(np.count_nonzero(h != o)) <= NEAR_DUPLICATE_BITS for o in hashes):
                dropped += 1
                continue
            hashes.append(h)
            kept.setdefault(identity, []).append(photo.path)

    rng = np.random.default_rng(seed)
    enrolment: dict[str, list[Path]] = {}
    eligible: list[str] = []
    for identity, paths in kept.items():
        order = [paths[i] for i in rng.permutation(len(paths))]
        enrolment[identity] = []
        for path in order:
            if len(enrolment[identity]) == RESERVED_FOR_ENROLMENT:
                break
            if finder.usable_faces(path) == 1:
                enrolment[identity].append(path)
        if len(enrolment[identity]) == RESERVED_FOR_ENROLMENT and \
                len(paths) > RESERVED_FOR_ENROLMENT:
            eligible.append(identity)
    eligible.sort()
    short = sorted(set(kept) - set(eligible))
    shuffled = [eligible[i] for i in rng.permutation(len(eligible))]
    want_strangers = max(1, int(np.ceil(STRANGER_SHARE * len(kept))))
    extra = max(0, want_strangers - len(short))
    roles: dict[str, Role] = {i: "stranger" for i in short + shuffled[:extra]}
    for n, identity in enumerate(shuffled[extra:]):
        roles[identity] = "protected" if n % 2 == 0 else "consenting"

    probes: list[Probe] = []
    for identity in sorted(kept):
        role = roles[identity]
        reserved = set(enrolment[identity]) if role != "stranger" else set()
        paths = [p for p in kept[identity] if p not in reserved]
        order = [paths[i] for i in np.random.default_rng(_seed_of(seed, identity))
                 .permutation(len(paths))]
        if max_probes_per_identity is not None:
            order = order[:max_probes_per_identity]
        probes += [Probe(identity, role, p, f"{set_root.name}/{p.parent.name}/{p.name}")
                   for p in sorted(order)]
    return DatasetPlan(name=set_root.name, roles=roles,
                       enrolment={i: enrolment[i] for i, r in roles.items() if r != "stranger"},
                       probes=probes, near_duplicates_dropped=dropped, finder=finder)


# -- counting --------------------------------------------------------------------------------
@dataclass(slots=True)
class CaseCounts:
    """Counts for one (dataset, enrolment count, transform).

    - ``false_allow_protected``: a protected person's photo got ``allow`` (whichever face
      it was matched to; ``false_allow_via_wrong_subject`` counts those allowed because a
      face was taken for a consenting subject other than the person in the photo);
    - ``false_allow_stranger``: a never-enrolled person's photo got ``allow``;
    - ``false_allow_no_face``: of those false allows, the ones where the gate found no
      face at all (a policy that allows requests without faces turns a detection miss
      into an allow; the default policy denies face operations without a face);
    - ``protected_recognised``: ``deny`` with a face identified as that protected subject;
    - ``protected_not_recognised``: no face identified as that subject (missed, or passed
      as unknown / another person); ``protected_needs_consent`` is the share of protected
      photos answered ``needs_consent`` (a count), which a requester could try to click
      through;
    - ``false_block``: a consenting person's photo where no face is identified as that
      subject with its grant (``consented``); ``consenting_not_allowed`` counts verdicts
      other than ``allow`` (the same except for extra faces, e.g. ``crowd``);
    - ``wrong_subject``: some face named an enrolled subject other than the person in the
      photo (for strangers: any subject);
    - ``detection_miss``: no face found at all;
    - ``faults``: the gate failed closed (``core.fail_closed``); ``input_errors``: the
      transformed image was refused as invalid.
    """

    probes: Counter[str] = field(default_factory=Counter)
    verdicts: dict[str, Counter[str]] = field(default_factory=dict)
    false_allow_protected: int = 0
    false_allow_stranger: int = 0
    false_allow_via_wrong_subject: int = 0
    false_allow_no_face: int = 0
    protected_recognised: int = 0
    protected_not_recognised: int = 0
    protected_needs_consent: int = 0
    false_block: int = 0
    consenting_not_allowed: int = 0
    wrong_subject: int = 0
    detection_miss: int = 0
    faults: int = 0
    input_errors: int = 0
    latencies_ms: list[float] = field(default_factory=list)

    def add(self, role: Role, own: str | None, subject_roles: dict[str, Role],
            decision: Decision | None, latency_ms: float) -> None:
        self.probes[role] += 1
        self.latencies_ms.append(latency_ms)
        if decision is None:
            self.input_errors += 1
            self.verdicts.setdefault(role, Counter())["input_error"] += 1
            if role == "protected":
                self.protected_not_recognised += 1
            elif role == "consenting":
                self.false_block += 1
                self.consenting_not_allowed += 1
            return
        verdict = decision.verdict
        self.verdicts.setdefault(role, Counter())[verdict] += 1
        if "core.fail_closed" in decision.rule_ids:
            self.faults += 1
        faces = [f for f in decision.faces if f.source == "image"]
        if not faces:
            self.detection_miss += 1
        named = {f.subject_id for f in faces if f.subject_id is not None}
        wrong = named - {own}
        if wrong:
            self.wrong_subject += 1
        mine = [f for f in faces if own is not None and f.subject_id == own]
        if role in ("protected", "stranger") and verdict == "allow":
            if role == "protected":
                self.false_allow_protected += 1
            else:
                self.false_allow_stranger += 1
            if any(subject_roles.get(s) == "consenting" for s in wrong):
                self.false_allow_via_wrong_subject += 1
            if not faces:
                self.false_allow_no_face += 1
        if role == "protected":
            if any(f.identity == "protected" for f in mine) and verdict == "deny":
                self.protected_recognised += 1
            if not mine:
                self.protected_not_recognised += 1
            if verdict == "needs_consent":
                self.protected_needs_consent += 1
        elif role == "consenting":
            if not any(f.identity == "consented" for f in mine):
                self.false_block += 1
            if verdict != "allow":
                self.consenting_not_allowed += 1

    def merge(self, other: CaseCounts) -> None:
        self.probes.update(other.probes)
        for role, c in other.verdicts.items():
            self.verdicts.setdefault(role, Counter()).update(c)
        for name in _INT_FIELDS:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.latencies_ms += other.latencies_ms

    @property
    def total(self) -> int:
        return sum(self.probes.values())

    def rates(self) -> dict[str, float | None]:
        def rate(k: int, n: int) -> float | None:
            return round(k / n, 4) if n else None

        p, c, s = (self.probes[r] for r in ("protected", "consenting", "stranger"))
        return {
            "false_allow": rate(self.false_allow_protected + self.false_allow_stranger, p + s),
            "false_allow_protected": rate(self.false_allow_protected, p),
            "false_allow_stranger": rate(self.false_allow_stranger, s),
            "protected_recognised": rate(self.protected_recognised, p),
            "protected_not_recognised": rate(self.protected_not_recognised, p),
            "protected_needs_consent": rate(self.protected_needs_consent, p),
            "false_block": rate(self.false_block, c),
            "consenting_not_allowed": rate(self.consenting_not_allowed, c),
            "wrong_subject": rate(self.wrong_subject, self.total),
            "detection_miss": rate(self.detection_miss, self.total),
        }

    def latency(self) -> dict[str, float | None]:
        if not self.latencies_ms:
            return {"p50_ms": None, "p95_ms": None}
        arr = np.asarray(self.latencies_ms)
        return {"p50_ms": round(float(np.percentile(arr, 50)), 1),
                "p95_ms": round(float(np.percentile(arr, 95)), 1)}

    def to_dict(self) -> dict[str, Any]:
        return {
            "probes": dict(self.probes),
            "verdicts": {r: dict(c) for r, c in self.verdicts.items()},
            **{name: getattr(self, name) for name in _INT_FIELDS},
            "rates": self.rates(),
            "latency": self.latency(),
        }


_INT_FIELDS = ("false_allow_protected", "false_allow_stranger",
               "false_allow_via_wrong_subject", "false_allow_no_face", "protected_recognised",
               "protected_not_recognised", "protected_needs_consent", "false_block",
               "consenting_not_allowed", "wrong_subject", "detection_miss", "faults",
               "input_errors")


@dataclass(frozen=True, slots=True)
class CaseResult:
    dataset: str  # a set name, or "all" for the sum over sets
    enrol: int
    transform: str
    counts: CaseCounts


@dataclass(slots=True)
class EfficacyReport:
    settings: dict[str, Any]
    datasets: list[dict[str, Any]]
    cases: list[CaseResult]
    enrolment_failures: list[dict[str, Any]]
    elapsed_s: float = 0.0

    def case(self, dataset: str, enrol: int, transform: str) -> CaseResult:
        for c in self.cases:
            if (c.dataset, c.enrol, c.transform) == (dataset, enrol, transform):
                return c
        raise KeyError((dataset, enrol, transform))

    def with_totals(self) -> list[CaseResult]:
        """The cases plus, when there are several datasets, their sum as ``all``."""
        names = list(dict.fromkeys(c.dataset for c in self.cases))
        if len(names) < 2:
            return list(self.cases)
        totals: dict[tuple[int, str], CaseCounts] = {}
        for c in self.cases:
            totals.setdefault((c.enrol, c.transform), CaseCounts()).merge(c.counts)
        return list(self.cases) + [CaseResult("all", e, t, cc) for (e, t), cc in totals.items()]

    def to_dict(self) -> dict[str, Any]:
        return {
            "settings": self.settings,
            "datasets": self.datasets,
            "enrolment_failures": self.enrolment_failures,
            "elapsed_s": round(self.elapsed_s, 1),
            "cases": [{"dataset": c.dataset, "enrol": c.enrol, "transform": c.transform,
                       **c.counts.to_dict()} for c in self.with_totals()],
        }

    def write_json(self, path: Path) -> None:
        import json

        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    # -- rendering --------------------------------------------------------------------------
    def rows(self) -> list[tuple[str, int, list[str]]]:
        """(dataset, enrol, cells) per case, cells in :data:`COLUMNS` order."""
        out = []
        for c in self.with_totals():
            cc = c.counts
            r = cc.rates()
            lat = cc.latency()
            p, s = cc.probes["protected"], cc.probes["stranger"]
            fa = cc.false_allow_protected + cc.false_allow_stranger
            cells = [
                c.transform,
                f"{p}/{cc.probes['consenting']}/{s}",
                f"{fa}/{p + s}",
                f"{cc.false_allow_no_face}",
                _pct(r["protected_not_recognised"]),
                _pct(r["false_block"]),
                f"{cc.wrong_subject}",
                _pct(r["detection_miss"]),
                f"{cc.faults + cc.input_errors}",
                _ms(lat["p50_ms"]),
                _ms(lat["p95_ms"]),
            ]
            out.append((c.dataset, c.enrol, cells))
        return out

    def tables(self) -> list[Table]:
        from rich.table import Table

        grouped: dict[tuple[str, int], list[list[str]]] = {}
        for dataset, enrol, cells in self.rows():
            grouped.setdefault((dataset, enrol), []).append(cells)
        tables = []
        for (dataset, enrol), rows in grouped.items():
            table = Table(title=f"{dataset}: enrolled from {enrol} photo"
                                f"{'s' if enrol > 1 else ''}")
            for n, col in enumerate(COLUMNS):
                table.add_column(col, justify="left" if n == 0 else "right")
            for cells in rows:
                table.add_row(*cells)
            tables.append(table)
        return tables

    def markdown(self) -> str:
        """One Markdown table, a row per (dataset, enrolment count, transform)."""
        header = ["set", "enrol", *COLUMNS]
        lines = ["| " + " | ".join(header) + " |",
                 "|" + "|".join(["---"] * 3 + ["---:"] * (len(header) - 3)) + "|"]
        for dataset, enrol, cells in self.rows():
            lines.append("| " + " | ".join([dataset, str(enrol), *cells]) + " |")
        return "\n".join(lines) + "\n"


    def summary_markdown(self, dataset: str | None = None) -> str:
        """Transforms as rows, enrolment counts side by side, for one dataset (default:
        ``all`` when there are several, else the only one). Cells are ``1 photo / 3``."""
        cases = self.with_totals()
        names = list(dict.fromkeys(c.dataset for c in cases))
        dataset = dataset or ("all" if "all" in names else names[0])
        enrols = sorted({c.enrol for c in cases})
        by_key = {(c.enrol, c.transform): c.counts for c in cases if c.dataset == dataset}
        transforms = list(dict.fromkeys(t for (_, t) in by_key))
        enr = " / ".join(str(e) for e in enrols)
        header = ["transform", f"false-allow ({enr})", "of which no face",
                  "prot. not recog.", "false-block", "wrong subj.", "det. miss", "p50 ms"]
        lines = ["| " + " | ".join(header) + " |",
                 "|---|" + "|".join(["---:"] * (len(header) - 1)) + "|"]
        for t in transforms:
            cc = [by_key[(e, t)] for e in enrols if (e, t) in by_key]

            def each(fn: Callable[[CaseCounts], str], counts: list[CaseCounts] = cc) -> str:
                return " / ".join(fn(c) for c in counts)

            lines.append("| " + " | ".join([
                t,
                each(lambda c: f"{c.false_allow_protected + c.false_allow_stranger}/"
                               f"{c.probes['protected'] + c.probes['stranger']}"),
                each(lambda c: str(c.false_allow_no_face)),
                each(lambda c: _pct(c.rates()["protected_not_recognised"])),
                each(lambda c: _pct(c.rates()["false_block"])),
                each(lambda c: str(c.wrong_subject)),
                each(lambda c: _pct(c.rates()["detection_miss"])),
                each(lambda c: _ms(c.latency()["p50_ms"])),
            ]) + " |")
        return "\n".join(lines) + "\n"


COLUMNS = ("transform", "probes P/C/S", "false-allow", "of which no face",
           "prot. not recog.", "false-block",
           "wrong subj.", "det. miss", "errors", "p50 ms", "p95 ms")


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


# -- running -------------------------------------------------------------------------------
def default_gate_factory(**overrides: Any) -> GateFactory:
    """``FaceGate.open(tmpdir, **overrides)``: the embedded gate with real models."""
    def factory(data_dir: Path) -> FaceGate:
        from gate.engine import FaceGate

        return FaceGate.open(data_dir, **overrides)

    return factory


def enrol_plan(gate: FaceGate, plan: DatasetPlan, count: int,
               failures: list[dict[str, Any]]) -> dict[str, str]:
    """Enrol every non-stranger of ``plan`` from ``count`` photos; identity -> subject id."""
    subjects: dict[str, str] = {}
    for identity, photos in sorted(plan.enrolment.items()):
        role = plan.roles[identity]
        try:
            subject = gate.enroll([p.read_bytes() for p in photos[:count]], identity,
                                  status="protected" if role == "protected" else "consenting")
        except EnrollmentError as exc:
            failures.append({"dataset": plan.name, "enrol": count, "identity": identity,
                             "error": exc.code})
            continue
        subjects[identity] = subject.subject_id
        if role == "consenting":
            gate.grant(subject.subject_id, app_id=EVAL_APP, operations=["face_swap"],
                       content=["general"])
    return subjects


def check_probe(gate: FaceGate, data: bytes) -> tuple[Decision | None, float]:
    """One ``face_swap`` check of ``data`` as target; (decision or None if refused, ms)."""
    request = GateRequest(operation="face_swap", requester=REQUESTER,
                          images=[ImageInput(role="target", data=data)])
    started = time.perf_counter()
    try:
        decision: Decision | None = gate.check(request)
    except (InvalidImage, InvalidRequest):
        decision = None
    return decision, (time.perf_counter() - started) * 1000


def run_efficacy(gate_factory: GateFactory, roots: Sequence[Path], *,
                 enrol_photos: int | Iterable[int] = (1, 3),
                 transforms: str | Sequence[str] = "all", seed: int = 0,
                 max_probes_per_identity: int | None = None,
                 progress: Progress | None = None) -> EfficacyReport:
    """Run the protocol of this module over every dataset under ``roots``."""
    started = time.perf_counter()
    load_before = _load_average()
    names = resolve(transforms)
    counts = sorted({enrol_photos} if isinstance(enrol_photos, int) else set(enrol_photos))
    if not counts or any(not 1 <= c <= RESERVED_FOR_ENROLMENT for c in counts):
        raise ValueError(f"enrolment counts must be 1..{RESERVED_FOR_ENROLMENT}")
    sets = [s for root in roots for s in discover_sets(Path(root))]
    if not sets:
        raise ValueError("no <identity>/<photo> folders found under the given roots")
    say = progress or (lambda _msg: None)
    cases: list[CaseResult] = []
    summaries: list[dict[str, Any]] = []
    failures: list[dict[str, Any]] = []
    for set_root in sets:
        with tempfile.TemporaryDirectory(prefix="gate-eval-") as tmp:
            gates = {c: gate_factory(Path(tmp) / f"enrol{c}") for c in counts}
            try:
                first = gates[counts[0]]
                finder = FaceFinder(first.parts.detector, first.settings.min_face_px)
                plan = plan_dataset(set_root, finder, seed=seed,
                                    max_probes_per_identity=max_probes_per_identity)
                summaries.append(plan.summary())
                say(f"{plan.name}: {len(plan.probes)} probes, "
                    f"{len(plan.identities('protected'))} protected / "
                    f"{len(plan.identities('consenting'))} consenting / "
                    f"{len(plan.identities('stranger'))} strangers")
                subjects = {c: enrol_plan(g, plan, c, failures) for c, g in gates.items()}
                cases += _run_dataset(plan, gates, subjects, names, seed, say)
            finally:
                for g in gates.values():
                    g.close()
    settings = {"seed": seed, "enrol_photos": counts, "transforms": names,
                "max_probes_per_identity": max_probes_per_identity,
                "sets": [s.name for s in sets], "cpu_count": os.cpu_count(),
                "load_average_1m": {"start": load_before, "end": _load_average()}}
    return EfficacyReport(settings=settings, datasets=summaries, cases=cases,
                          enrolment_failures=failures,
                          elapsed_s=time.perf_counter() - started)


def _load_average() -> float | None:
    """1-minute load average: latency figures mean little on a busy machine."""
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:  # pragma: no cover - not available on every platform
        return None


def _run_dataset(plan: DatasetPlan, gates: dict[int, FaceGate],
                 subjects: dict[int, dict[str, str]], names: list[str], seed: int,
                 say: Progress) -> list[CaseResult]:
    strangers = [p for p in plan.probes if p.role == "stranger"]
    photo_bytes = {p.path: p.path.read_bytes() for p in plan.probes}
    others_cache: dict[str, tuple[bytes, ...]] = {}

    def others(identity: str) -> tuple[bytes, ...]:
        if identity not in others_cache:
            pool = tuple(photo_bytes[p.path] for p in strangers if p.identity != identity)
            others_cache[identity] = pool or tuple(photo_bytes[p.path] for p in strangers)
        return others_cache[identity]

    roles_by_subject = {c: {sid: plan.roles[i] for i, sid in subs.items()}
                        for c, subs in subjects.items()}
    results: list[CaseResult] = []
    for name in names:
        fn = TRANSFORMS[name]
        t0 = time.perf_counter()
        tallies = {c: CaseCounts() for c in gates}
        for probe in plan.probes:
            ctx = TransformContext(
                seed=_seed_of(seed, probe.ref),
                face=plan.finder.geometry(probe.path) if name in NEEDS_GEOMETRY else None,
                others=others(probe.identity) if name in NEEDS_OTHERS else (),
            )
            data = fn(photo_bytes[probe.path], ctx)
            for c, gate in gates.items():
                own = subjects[c].get(probe.identity)
                if probe.role != "stranger" and own is None:
                    continue  # enrolment failed for this identity in this run
                decision, ms = check_probe(gate, data)
                tallies[c].add(probe.role, own, roles_by_subject[c], decision, ms)
        for c, tally in tallies.items():
            results.append(CaseResult(plan.name, c, name, tally))
        say(f"{plan.name} {name}: {len(plan.probes)} probes x {len(gates)} gates in "
            f"{time.perf_counter() - t0:.0f}s")
    return results


__all__ = ["COLUMNS", "CaseCounts", "CaseResult", "DatasetPlan", "EfficacyReport", "FaceFinder",
           "Probe", "check_probe", "default_gate_factory", "discover_sets", "plan_dataset",
           "run_efficacy"]
