"""Threshold calibration on labelled photos: genuine vs impostor cosine similarities.

Every photo goes through the product pipeline (decode, detect, align, embed) and the
largest face is kept. All pairs of photos give genuine (same identity) and impostor
(different identity) scores; we report TAR at fixed FAR, choose the operating threshold
on a calibration split and check it on a held-out split.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif"}
#: The same person under two labels in ../shared/faces (see its README).
IDENTITY_ALIASES = {"Barack_Obama": "obama"}


@dataclass(frozen=True, slots=True)
class Photo:
    identity: str
    path: Path


@dataclass(frozen=True, slots=True)
class Embedded:
    identity: str
    path: str
    vector: np.ndarray | None  # None: no face found
    quality: float


def list_photos(roots: Iterable[Path]) -> list[Photo]:
    """``<root>/<identity>/<image>`` for each root (a set folder or a folder of sets)."""
    photos: list[Photo] = []
    for root in roots:
        for ident_dir in sorted(p for p in root.iterdir() if p.is_dir()):
            ident = IDENTITY_ALIASES.get(ident_dir.name, ident_dir.name)
            photos += [Photo(ident, f) for f in sorted(ident_dir.iterdir())
                       if f.suffix.lower() in IMAGE_SUFFIXES]
    return photos


def embed_photos(gate: object, photos: list[Photo]) -> list[Embedded]:
    out = []
    for photo in photos:
        found = gate.largest_face_vector(photo.path.read_bytes())  # type: ignore[attr-defined]
        vec, quality = found if found is not None else (None, 0.0)
        out.append(Embedded(photo.identity, str(photo.path), vec, quality))
    return out


@dataclass(frozen=True, slots=True)
class Scores:
    genuine: np.ndarray
    impostor: np.ndarray


def pair_scores(items: list[Embedded]) -> Scores:
    usable = [e for e in items if e.vector is not None]
    if len(usable) < 2:
        return Scores(np.zeros(0), np.zeros(0))
    mat = np.stack([e.vector for e in usable])  # type: ignore[misc]
    labels = np.array([e.identity for e in usable])
    sims = mat @ mat.T
    iu = np.triu_indices(len(usable), k=1)
    same = labels[iu[0]] == labels[iu[1]]
    return Scores(genuine=sims[iu][same], impostor=sims[iu][~same])


def threshold_at_far(impostor: np.ndarray, far: float) -> float:
    """Smallest threshold whose false-accept rate on ``impostor`` is <= ``far``."""
    if impostor.size == 0:
        return 1.0
    ordered = np.sort(impostor)[::-1]
    allowed = int(np.floor(far * impostor.size))
    return float(ordered[allowed] + 1e-6) if allowed < impostor.size else float(ordered[-1])


@dataclass(frozen=True, slots=True)
class OperatingPoint:
    far_target: float
    threshold: float
    tar: float
    far: float


def operating_point(scores: Scores, far_target: float) -> OperatingPoint:
    thr = threshold_at_far(scores.impostor, far_target)
    return evaluate_threshold(scores, thr, far_target)


def evaluate_threshold(scores: Scores, threshold: float, far_target: float = 0.0
                       ) -> OperatingPoint:
    tar = float(np.mean(scores.genuine >= threshold)) if scores.genuine.size else 0.0
    far = float(np.mean(scores.impostor >= threshold)) if scores.impostor.size else 0.0
    return OperatingPoint(far_target, round(threshold, 4), round(tar, 4), round(far, 6))


def split_by_identity(items: list[Embedded], seed: int = 7) -> tuple[list[Embedded],
                                                                    list[Embedded]]:
    idents = sorted({e.identity for e in items})
    rng = np.random.default_rng(seed)
    rng.shuffle(idents)
    held = set(idents[: len(idents) // 2])
    return [e for e in items if e.identity not in held], [e for e in items if e.identity in held]


def calibrate(items: list[Embedded], chosen_far: float = 1e-3) -> dict[str, object]:
    calib, held = split_by_identity(items)
    s_all, s_cal, s_held = pair_scores(items), pair_scores(calib), pair_scores(held)
    chosen = operating_point(s_cal, chosen_far)
    return {
        "photos": len(items),
        "faces_found": sum(e.vector is not None for e in items),
        "identities": len({e.identity for e in items}),
        "genuine_pairs": int(s_all.genuine.size),
        "impostor_pairs": int(s_all.impostor.size),
        "all": [asdict(operating_point(s_all, f)) for f in (1e-2, 1e-3, 1e-4)],
        "calibration_split": asdict(chosen),
        "held_out_at_chosen": asdict(evaluate_threshold(s_held, chosen.threshold, chosen_far)),
        "genuine_percentiles": {p: round(float(np.percentile(s_all.genuine, p)), 4)
                                for p in (1, 5, 50)} if s_all.genuine.size else {},
        "impostor_percentiles": {p: round(float(np.percentile(s_all.impostor, p)), 4)
                                 for p in (50, 99, 99.9)} if s_all.impostor.size else {},
    }


def main(roots: list[Path], out_json: Path | None = None) -> dict[str, object]:
    import tempfile

    from gate.engine import FaceGate

    with tempfile.TemporaryDirectory() as tmp:
        gate = FaceGate.open(tmp)
        try:
            items = embed_photos(gate, list_photos(roots))
        finally:
            gate.close()
    report = calibrate(items)
    if out_json is not None:
        out_json.write_text(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="Calibrate the match threshold.")
    parser.add_argument("roots", nargs="+", type=Path, help="<root>/<identity>/<image> sets")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    print(json.dumps(main(args.roots, args.json), indent=2))
