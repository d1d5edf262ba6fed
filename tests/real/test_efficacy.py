"""The efficacy harness on real photos, and fail-closed-ness under every evasion transform.

The full measurement (both sets, every transform, 1 and 3 enrolment photos) is
``benchmarks/efficacy.py``; see docs/accuracy.md. These tests keep it runnable and make
sure no transform turns a protected person's photo into an ``allow``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from gate.engine import FaceGate
from gate.evaluation.harness import (
    RESERVED_FOR_ENROLMENT,
    EfficacyReport,
    check_probe,
    default_gate_factory,
    run_efficacy,
)
from gate.evaluation.transforms import (
    NEEDS_GEOMETRY,
    NEEDS_OTHERS,
    TRANSFORMS,
    TransformContext,
    decode_bgr,
    locate_face,
)

pytestmark = pytest.mark.real

#: Six identities of natural_small with enough photos: two of each role after the split.
SAMPLE = ("John_Salley", "John_Savage", "John_Schneider", "John_Shimkus", "John_Simm",
          "ben_afflek")
PROTECTED = "John_Schneider"
CROWD_FILLERS = ("bbt_amy", "bbt_howard", "bbt_penny", "bbt_raj")


def _photos(faces_dir: Path, identity: str) -> list[Path]:
    return sorted((faces_dir / "natural_small" / identity).iterdir())


@pytest.fixture(scope="module")
def small_report(faces_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> EfficacyReport:
    sample = tmp_path_factory.mktemp("faces") / "sample"
    sample.mkdir()
    for identity in SAMPLE:
        (sample / identity).symlink_to(faces_dir / "natural_small" / identity)
    return run_efficacy(default_gate_factory(), [sample], enrol_photos=1,
                        transforms=["clean", "hflip"], seed=0, max_probes_per_identity=2)


def test_small_run_has_no_false_allow_on_clean_photos(small_report: EfficacyReport) -> None:
    clean = small_report.case("sample", 1, "clean").counts
    assert clean.faults == 0 and clean.input_errors == 0
    assert clean.false_allow_protected == 0 and clean.false_allow_stranger == 0


def test_small_run_counts_add_up(small_report: EfficacyReport) -> None:
    (summary,) = small_report.datasets
    assert summary["identities"] == {"protected": 2, "consenting": 2, "stranger": 2}
    assert summary["probes"] == {"protected": 4, "consenting": 4, "stranger": 4}
    for transform in ("clean", "hflip"):
        counts = small_report.case("sample", 1, transform).counts
        assert counts.total == 12 and len(counts.latencies_ms) == 12
        for role, n in counts.probes.items():
            assert sum(counts.verdicts[role].values()) == n
        p, c = counts.probes["protected"], counts.probes["consenting"]
        assert counts.protected_recognised + counts.protected_not_recognised <= p
        # An allowed protected photo cannot have had its own face identified (deny).
        assert counts.false_allow_protected <= counts.protected_not_recognised
        assert counts.protected_needs_consent <= p
        assert counts.false_block <= c and counts.consenting_not_allowed <= c
        assert counts.false_allow_no_face <= counts.detection_miss
        assert all(r is None or 0.0 <= r <= 1.0 for r in counts.rates().values())
        latency = counts.latency()
        assert latency["p50_ms"] is not None and latency["p95_ms"] is not None
        assert 0 < latency["p50_ms"] <= latency["p95_ms"]


def test_small_run_serialises(small_report: EfficacyReport, tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    small_report.write_json(out)
    data = json.loads(out.read_text())
    assert {c["transform"] for c in data["cases"]} == {"clean", "hflip"}
    assert data["settings"]["enrol_photos"] == [1]
    table = small_report.markdown()
    assert table.count("\n") == 2 + 2 and "| sample | 1 | clean |" in table
    assert len(small_report.tables()) == 1


# -- fail-closed under every transform -------------------------------------------------------
@pytest.fixture(scope="module")
def protected_gate(faces_dir: Path, tmp_path_factory: pytest.TempPathFactory
                   ) -> Iterator[FaceGate]:
    gate = FaceGate.open(tmp_path_factory.mktemp("probe"))
    gate.enroll([_photos(faces_dir, PROTECTED)[0].read_bytes()], PROTECTED,
                status="protected")
    yield gate
    gate.close()


PROBE_CASES = list(TRANSFORMS)


@pytest.mark.parametrize("name", PROBE_CASES)
def test_transform_probe(name: str, protected_gate: FaceGate, faces_dir: Path) -> None:
    """A protected person's photo, transformed, is never allowed as a face_swap target:
    recognised it is denied, unrecognised the face is unknown (needs_consent), and with no
    face detected at all the face operation is denied (face_operation.no_face)."""
    others = tuple(_photos(faces_dir, i)[0].read_bytes() for i in CROWD_FILLERS)
    probes = _photos(faces_dir, PROTECTED)[RESERVED_FOR_ENROLMENT:RESERVED_FOR_ENROLMENT + 2]
    for n, path in enumerate(probes):
        data = path.read_bytes()
        face = None
        if name in NEEDS_GEOMETRY:
            face = locate_face(protected_gate.parts.detector, decode_bgr(data))
        ctx = TransformContext(seed=n, face=face, others=others if name in NEEDS_OTHERS else ())
        decision, _ = check_probe(protected_gate, TRANSFORMS[name](data, ctx))
        assert decision is not None, f"{name}: the transformed image was refused"
        assert decision.verdict != "allow", (
            f"{name} on {path.name}: allowed ({decision.rule_ids}, "
            f"{[(f.identity, f.similarity) for f in decision.faces]})")
