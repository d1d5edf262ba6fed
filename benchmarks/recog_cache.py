"""Extract, once, what recognition studies need from every photo of the efficacy protocol.

For each dataset of ``../shared/faces`` the efficacy plan is rebuilt exactly as
``gate/evaluation/harness.py`` builds it (same seed, roles, enrolment photos, probes,
transform contexts). Every enrolment photo (clean) and every probe under every transform
goes through the product's decode and detector; for every face found we keep its box,
landmarks, detector score, size, quality and the SFace vectors of the aligned crop and of
its mirror image (so flip test-time augmentation can be switched on or off afterwards).
The stages are the product's own (``gate.pipeline.FaceAnalyzer``: decode, detect; then
``align_face`` and ``face_quality`` as the pipeline's align stage).

The arrays go to ``--out`` (default ``/tmp/recog-cache``), never into the repository:

    .venv/bin/python benchmarks/recog_cache.py                       # SFace, all transforms
    .venv/bin/python benchmarks/recog_cache.py --tag plain --setting orientation_check=false

With ``--dlib`` (needs ``pip install 'consent-gate[dlib]'``) every face also gets dlib's
ResNet descriptor (``gate.vision.dlib_face.DlibEmbedder``, chip made from the same YuNet
landmarks): of the chip and its mirror for enrolment photos (templates are made once), of
the chip alone for probes unless ``--dlib-mirror``. ``benchmarks/second_opinion.py`` reads
them:

    nice -n 10 .venv/bin/python benchmarks/recog_cache.py --tag dlib --dlib

``benchmarks/recognition.py`` reads them.
"""

from __future__ import annotations

import argparse
import os
import pickle
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


@dataclass(slots=True)
class FaceRec:
    bbox: tuple[float, float, float, float]  # original-image pixels
    landmarks: np.ndarray  # 5x2, original-image pixels
    score: float
    size_px: float
    quality: float
    sface: np.ndarray  # (2, 128): crop, mirror (raw unit vectors)
    dlib: np.ndarray | None = None  # (1 or 2, 128): chip[, mirror] (unit), with --dlib
    #: With --zooms: (Z, 2, 128) raw SFace of each zoomed crop and its mirror.
    zooms: np.ndarray | None = None


@dataclass(slots=True)
class ImageRec:
    ref: str
    identity: str
    role: str
    transform: str  # "enrol" for enrolment photos
    faces: list[FaceRec] = field(default_factory=list)
    error: str | None = None


def open_gate(tmp: Path, **overrides: Any) -> Any:
    from gate.engine import FaceGate

    return FaceGate.open(tmp, analysis_cache_items=0, **overrides)


def analyse(gate: Any, data: bytes, dlib: Any = None, dlib_mirror: bool = False,
            zooms: tuple[float, ...] = ()) -> list[FaceRec]:
    """The product's decode + detect + align + quality (first frame: the protocol's
    inputs are stills), and raw SFace of crop and mirror; with ``dlib`` (a
    ``DlibEmbedder``) also dlib's descriptor of each face's chip [and its mirror].
    Raises ``InvalidImage``."""
    from gate.vision.align import align_face, zoom_views
    from gate.vision.quality import face_quality

    analyzer = gate.faces  # gate.pipeline.FaceAnalyzer
    decoded = analyzer.decode(data)
    found = analyzer.detect(decoded, first_only=True)
    out: list[FaceRec] = []
    if not found:
        return out
    crops, qualities = [], []
    for f in found:
        crop, points = align_face(decoded.frames[f.frame_pos].pixels, f.det.landmarks_array())
        crops.append(crop)
        qualities.append(face_quality(f.det, crop, points).score)
    base = getattr(gate.parts.embedder, "base", gate.parts.embedder)
    vecs = base.embed(crops + [np.ascontiguousarray(c[:, ::-1]) for c in crops])
    n = len(found)
    for i, f in enumerate(found):
        s = f.scale
        out.append(FaceRec(
            bbox=tuple(float(v) / s for v in f.det.bbox),  # type: ignore[arg-type]
            landmarks=f.det.landmarks_array() / s, score=float(f.det.score),
            size_px=float(f.det.size_px / s), quality=float(qualities[i]),
            sface=np.stack([vecs[i], vecs[n + i]]).astype(np.float32)))
    if zooms:
        for f, rec in zip(found, out, strict=True):
            views = zoom_views(decoded.frames[f.frame_pos].pixels, f.det.landmarks_array(),
                               zooms)
            v = base.embed(list(views) + [np.ascontiguousarray(c[:, ::-1]) for c in views])
            rec.zooms = np.stack([v[: len(views)], v[len(views):]], axis=1).astype(np.float32)
    if dlib is not None:
        for f, rec in zip(found, out, strict=True):
            chip = dlib.chip(decoded.frames[f.frame_pos].pixels, f.det.landmarks_array())
            chips = [chip, np.ascontiguousarray(chip[:, ::-1])] if dlib_mirror else [chip]
            rec.dlib = dlib.embed(chips).astype(np.float32)
    return out


def build_plan(gate: Any, set_root: Path, seed: int) -> Any:
    from gate.evaluation.harness import FaceFinder, plan_dataset

    finder = FaceFinder(gate.parts.detector, gate.settings.min_face_px)
    return plan_dataset(set_root, finder, seed=seed)


def iter_images(plan: Any, transforms: list[str], seed: int,  # type: ignore[no-untyped-def]
                wanted: Any = None):
    """(ref, identity, role, transform, bytes) for enrolment photos and probes
    (only those for which ``wanted(ref, transform)`` is true, when given)."""
    from gate.evaluation.harness import _seed_of
    from gate.evaluation.transforms import (
        NEEDS_GEOMETRY,
        NEEDS_OTHERS,
        TRANSFORMS,
        TransformContext,
    )

    for identity, paths in sorted(plan.enrolment.items()):
        for p in paths:
            yield (f"{plan.name}/{p.parent.name}/{p.name}", identity, plan.roles[identity],
                   "enrol", p.read_bytes())
    strangers = [p for p in plan.probes if p.role == "stranger"]
    photo_bytes = {p.path: p.path.read_bytes() for p in plan.probes}

    def others(identity: str) -> tuple[bytes, ...]:
        pool = tuple(photo_bytes[p.path] for p in strangers if p.identity != identity)
        return pool or tuple(photo_bytes[p.path] for p in strangers)

    for name in transforms:
        fn = TRANSFORMS[name]
        for probe in plan.probes:
            if wanted is not None and not wanted(probe.ref, name):
                continue
            ctx = TransformContext(
                seed=_seed_of(seed, probe.ref),
                face=plan.finder.geometry(probe.path) if name in NEEDS_GEOMETRY else None,
                others=others(probe.identity) if name in NEEDS_OTHERS else ())
            yield probe.ref, probe.identity, probe.role, name, fn(photo_bytes[probe.path], ctx)


def main() -> int:
    from gate.errors import InvalidImage
    from gate.evaluation.harness import discover_sets
    from gate.evaluation.transforms import resolve

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=Path(os.environ.get(
        "GATE_TEST_FACES_DIR", REPO.parent / "shared" / "faces")))
    parser.add_argument("--out", type=Path, default=Path("/tmp/recog-cache"))
    parser.add_argument("--tag", default="base", help="name of this pipeline variant")
    parser.add_argument("--transforms", default="all")
    parser.add_argument("--sets", default="all")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--setting", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--dlib", action="store_true",
                        help="also dlib ResNet descriptors (chip; + mirror for enrolment)")
    parser.add_argument("--zooms", default="",
                        help="comma-separated template zooms: also SFace of those crops")
    parser.add_argument("--dlib-mirror", action="store_true",
                        help="with --dlib: the mirror's descriptor for probes too")
    args = parser.parse_args()
    overrides = dict(s.split("=", 1) for s in args.setting)
    zooms = tuple(float(z) for z in args.zooms.split(",") if z)
    names = resolve(args.transforms)
    args.out.mkdir(parents=True, exist_ok=True)
    roots = discover_sets(args.dir)
    if args.sets != "all":
        roots = [r for r in roots if r.name in set(args.sets.split(","))]
    with tempfile.TemporaryDirectory() as tmp:
        gate = open_gate(Path(tmp), **overrides)
        dlib = None
        if args.dlib:
            from gate.vision.dlib_face import DlibEmbedder

            dlib = DlibEmbedder()
        for root in roots:
            plan = build_plan(gate, root, args.seed)
            meta = {"name": plan.name, "roles": plan.roles,
                    "enrolment": {i: [f"{plan.name}/{p.parent.name}/{p.name}" for p in ps]
                                  for i, ps in plan.enrolment.items()},
                    "probes": [(p.ref, p.identity, p.role) for p in plan.probes]}
            by_transform: dict[str, list[ImageRec]] = {}
            t0 = time.perf_counter()
            for ref, identity, role, tname, data in iter_images(plan, names, args.seed):
                rec = ImageRec(ref, identity, role, tname)
                try:
                    rec.faces = analyse(gate, data, dlib,
                                        dlib_mirror=tname == "enrol" or args.dlib_mirror,
                                        zooms=zooms)
                except InvalidImage as exc:
                    rec.error = exc.code
                by_transform.setdefault(tname, []).append(rec)
                if len(by_transform[tname]) == 1:
                    print(f"{plan.name} {tname} ({time.perf_counter() - t0:.0f}s)",
                          file=sys.stderr, flush=True)
            path = args.out / f"{args.tag}-{plan.name}.pkl"
            with path.open("wb") as fh:
                pickle.dump({"meta": meta, "images": by_transform,
                             "overrides": overrides, "dlib": args.dlib,
                             "zooms": zooms}, fh)
            print(f"wrote {path}", file=sys.stderr)
        gate.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
