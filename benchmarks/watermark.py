"""Invisible watermark: robustness, false traces, quality and cost; and the libraries.

    .venv/bin/python benchmarks/watermark.py robustness           # the table of the docs
    .venv/bin/python benchmarks/watermark.py false-traces         # unmarked photos
    .venv/bin/python benchmarks/watermark.py cost                 # embed/extract vs a check
    .venv/bin/python benchmarks/watermark.py libraries            # blind-watermark, imwatermark

Images: the real photos of ``../shared/faces`` (or $GATE_TEST_FACES_DIR) scaled up to
1024 px on their long side (small crops, cubic) or down to it (large photos), glint24 crops
scaled to 512 px, and four synthetic images (flat grey, gradient, flat-colour shapes with
text, fine noise). Every marked image is attacked by each transform, then read back with
``TiledWatermarker.extract`` and matched by ``MarkMatcher`` against 10,000 issued digests
(the true one among them). "bit acc" is the share of the 64 payload bits read right;
"traced" the share matched to the right request; "wrong" matched to another (must be 0).
The library comparison needs ``pip install blind-watermark==0.4.4 PyWavelets`` and
``pip install --no-deps invisible-watermark==0.2.0`` (its torch import is stubbed here:
dwtDct/dwtDctSvd never touch torch; rivaGan's ONNX models run through onnxruntime).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import statistics
import sys
import time
import types
from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from gate.marking.watermark import (  # noqa: E402
    IssuedMarks,
    MarkMatcher,
    TiledWatermarker,
    mark_digest,
)

FACES = Path(os.environ.get("GATE_TEST_FACES_DIR", REPO.parent / "shared" / "faces"))
KEY = bytes(range(32))
Pixels = np.ndarray
Transform = Callable[[Pixels], Pixels]


# --------------------------------------------------------------------------- images


def _read(path: Path) -> Pixels:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise SystemExit(f"cannot read {path}")
    return image


def _fit(image: Pixels, longest: int) -> Pixels:
    height, width = image.shape[:2]
    ratio = longest / max(height, width)
    size = (round(width * ratio), round(height * ratio))
    return cv2.resize(image, size, interpolation=cv2.INTER_CUBIC if ratio > 1 else cv2.INTER_AREA)


def face_paths(set_name: str) -> list[Path]:
    root = FACES / set_name
    if not root.is_dir():
        raise SystemExit(f"no photos at {root}: set GATE_TEST_FACES_DIR")
    return sorted(p for p in root.glob("*/*") if p.suffix.lower() in {".jpg", ".jpeg", ".png"})


def synthetic() -> Iterator[tuple[str, Pixels]]:
    yield "synthetic/flat-grey", np.full((1024, 1024, 3), 128, np.uint8)
    ramp = np.linspace(30, 225, 1024, dtype=np.float32)
    grad = np.stack([np.add.outer(ramp, ramp[::-1]) / 2] * 3, -1)
    grad[:, :, 0] = ramp[None, :]
    yield "synthetic/gradient", grad.astype(np.uint8)
    shapes = np.full((768, 1024, 3), (235, 240, 245), np.uint8)
    cv2.circle(shapes, (300, 380), 220, (40, 90, 200), -1)
    cv2.rectangle(shapes, (560, 120), (960, 620), (60, 160, 60), -1)
    cv2.putText(shapes, "consent-gate 2026", (80, 720), cv2.FONT_HERSHEY_SIMPLEX, 2.2,
                (20, 20, 20), 5, cv2.LINE_AA)
    yield "synthetic/shapes-text", shapes
    noise = np.random.default_rng(7).normal(128, 40, (1024, 1024, 3))
    yield "synthetic/noise", np.clip(noise, 0, 255).astype(np.uint8)


def bench_images(limit: int) -> list[tuple[str, Pixels]]:
    """Real photos (the large ones and an even spread of the small ones) + synthetic."""
    small = face_paths("natural_small")
    large = [p for p in small if max(Image.open(p).size) >= 400]
    rest = [p for p in small if p not in large]
    glint = face_paths("glint24")
    picks: list[tuple[str, Pixels]] = []
    for path in large:
        picks.append((f"{path.parent.name}/{path.name}", _fit(_read(path), 1024)))
    step = max(1, len(rest) // max(1, limit - len(large) - 4 - 4))
    for path in rest[::step]:
        picks.append((f"{path.parent.name}/{path.name}", _fit(_read(path), 1024)))
    for path in glint[:: max(1, len(glint) // 4)][:4]:
        picks.append((f"glint24/{path.parent.name}/{path.name}", _fit(_read(path), 512)))
    picks = picks[: max(0, limit - 4)]
    return picks + list(synthetic())


# --------------------------------------------------------------------------- transforms


def jpeg(quality: int) -> Transform:
    def run(image: Pixels) -> Pixels:
        ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
        assert ok
        return cv2.imdecode(buf, cv2.IMREAD_COLOR)
    return run


def png(image: Pixels) -> Pixels:
    ok, buf = cv2.imencode(".png", image)
    assert ok
    return cv2.imdecode(buf, cv2.IMREAD_COLOR)


def strip_metadata(image: Pixels) -> Pixels:
    """Label as the gate does (XMP + AIGC text chunks), then re-save without metadata."""
    from gate.marking.labels import LabelInfo, label_png

    ok, buf = cv2.imencode(".png", image)
    assert ok
    labelled = label_png(buf.tobytes(), LabelInfo("bench", "req"))
    with Image.open(io.BytesIO(labelled)) as im:
        out = io.BytesIO()
        Image.frombytes(im.mode, im.size, im.tobytes()).save(out, format="PNG")
    return cv2.imdecode(np.frombuffer(out.getvalue(), np.uint8), cv2.IMREAD_COLOR)


def resize(ratio: float) -> Transform:
    def run(image: Pixels) -> Pixels:
        height, width = image.shape[:2]
        size = (round(width * ratio), round(height * ratio))
        return cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    return run


def crop(top: float, bottom: float, left: float, right: float) -> Transform:
    def run(image: Pixels) -> Pixels:
        height, width = image.shape[:2]
        return image[round(height * top): height - round(height * bottom),
                     round(width * left): width - round(width * right)]
    return run


def brightness(factor: float) -> Transform:
    def run(image: Pixels) -> Pixels:
        return np.clip(image.astype(np.float32) * factor, 0, 255).round().astype(np.uint8)
    return run


def chain(*steps: Transform) -> Transform:
    def run(image: Pixels) -> Pixels:
        for step in steps:
            image = step(image)
        return image
    return run


TRANSFORMS: dict[str, Transform] = {
    "none (lossless)": lambda image: image,
    "PNG re-encode": png,
    "metadata strip": strip_metadata,
    "JPEG q90": jpeg(90),
    "JPEG q70": jpeg(70),
    "JPEG q50": jpeg(50),
    "resize 50 %": resize(0.5),
    "crop 10 % border (5 % each side)": crop(0.05, 0.05, 0.05, 0.05),
    "crop 10 % each side": crop(0.1, 0.1, 0.1, 0.1),
    "crop 10 % top-left": crop(0.1, 0.0, 0.1, 0.0),
    "brightness +20 %": brightness(1.2),
    "brightness -20 %": brightness(0.8),
    "combined: crop 10 %, resize 50 %, JPEG q70": chain(
        crop(0.1, 0.0, 0.1, 0.0), resize(0.5), jpeg(70)),
    "combined: crop 5 % sides, resize 73 %, JPEG q80": chain(
        crop(0.05, 0.05, 0.05, 0.05), resize(0.73), jpeg(80)),
}


def _errors(bits: bytes, payload: bytes) -> int:
    return (int.from_bytes(bits, "big") ^ int.from_bytes(payload, "big")).bit_count()


def _psnr(a: Pixels, b: Pixels) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 99.0 if mse == 0 else 10 * np.log10(255.0**2 / mse)


# --------------------------------------------------------------------------- commands


def robustness(args: argparse.Namespace) -> None:
    marker = TiledWatermarker(KEY, strength=args.strength, min_sync_z=args.min_sync_z)
    images = bench_images(args.images)
    rng = np.random.default_rng(1)
    issued = IssuedMarks(int(v).to_bytes(8, "big")
                         for v in rng.integers(0, 2**63, 10_000, dtype=np.int64))
    payloads = [mark_digest(KEY, f"bench-request-{i}") for i in range(len(images))]
    for payload in payloads:
        issued.add(payload)
    matcher = MarkMatcher(issued, max_distance=args.max_distance)
    stats: dict[str, list[tuple[int, bool, bool, float]]] = {n: [] for n in TRANSFORMS}
    psnrs, embed_ms = [], []
    for (name, image), payload in zip(images, payloads, strict=True):
        start = time.perf_counter()
        marked = marker.embed(image, payload)
        embed_ms.append((time.perf_counter() - start) * 1e3)
        psnrs.append(_psnr(image, marked))
        for label, transform in TRANSFORMS.items():
            found = marker.extract(transform(marked))
            match = matcher.match(found)
            stats[label].append((_errors(found.bits, payload),
                                 match is not None and match.digest == payload,
                                 match is not None and match.digest != payload, found.sync_z))
            if args.verbose and (match is None or match.digest != payload):
                print(f"  miss: {name} / {label}: z={found.sync_z} errors="
                      f"{_errors(found.bits, payload)} scale={found.scale}", flush=True)
    print(f"\n{len(images)} images ({sum(1 for n, _ in images if n.startswith('synthetic'))} "
          f"synthetic), strength {args.strength}, presence z >= {args.min_sync_z}, match "
          f"within {args.max_distance} bits of {len(issued)} issued digests")
    print(f"PSNR median {statistics.median(psnrs):.1f} dB (min {min(psnrs):.1f}); embed "
          f"median {statistics.median(embed_ms):.0f} ms\n")
    print("| transform | bit accuracy | traced | wrong record | sync z (median) |")
    print("|---|---|---|---|---|")
    total = traced_all = 0
    for label, rows in stats.items():
        accuracy = 1 - sum(r[0] for r in rows) / (64 * len(rows))
        traced = sum(r[1] for r in rows)
        wrong = sum(r[2] for r in rows)
        total += len(rows)
        traced_all += traced
        print(f"| {label} | {accuracy:.2%} | {traced}/{len(rows)} | {wrong} | "
              f"{statistics.median(r[3] for r in rows):.1f} |")
    print(f"\ntraced in {traced_all}/{total} = {traced_all / total:.1%} of the attacked images")


def false_traces(args: argparse.Namespace) -> None:
    marker = TiledWatermarker(KEY, min_sync_z=args.min_sync_z)
    rng = np.random.default_rng(2)
    issued = IssuedMarks(int(v).to_bytes(8, "big")
                         for v in rng.integers(0, 2**63, 100_000, dtype=np.int64))
    matcher = MarkMatcher(issued, max_distance=args.max_distance)
    paths = face_paths("natural_small") + face_paths("glint24")
    paths = paths[:: max(1, len(paths) // args.images)][: args.images]
    zs, present, found = [], 0, 0
    for path in paths:
        image = _fit(_read(path), 512)
        extraction = marker.extract(image)
        zs.append(extraction.sync_z)
        present += extraction.present
        found += matcher.match(extraction) is not None
    other = TiledWatermarker(bytes(32), min_sync_z=args.min_sync_z)
    foreign = 0
    for i, (_, image) in enumerate(bench_images(12)):
        marked = other.embed(image, mark_digest(bytes(32), f"other-{i}"))
        foreign += marker.extract(marked).present
    print(f"{len(paths)} unmarked photos (scaled to 512 px), {len(issued)} issued digests")
    print(f"presence z: median {statistics.median(zs):.2f}, max {max(zs):.2f}, "
          f"threshold {args.min_sync_z}")
    print(f"present: {present}, traced (false traces): {found}")
    print(f"images marked under another key that look present under ours: {foreign}/12")


def cost(args: argparse.Namespace) -> None:
    marker = TiledWatermarker(KEY)
    image = _fit(_read(face_paths("natural_small")[0]), 1024)
    payload = mark_digest(KEY, "cost")
    marker.embed(image, payload)
    runs = args.runs
    start = time.perf_counter()
    for _ in range(runs):
        marked = marker.embed(image, payload)
    embed = (time.perf_counter() - start) / runs * 1e3
    start = time.perf_counter()
    for _ in range(max(1, runs // 4)):
        marker.extract(marked)
    extract = (time.perf_counter() - start) / max(1, runs // 4) * 1e3
    start = time.perf_counter()
    for _ in range(runs):
        cv2.imencode(".png", marked)
    png_ms = (time.perf_counter() - start) / runs * 1e3
    print(f"1024x1024: embed {embed:.1f} ms, extract (full scale search) {extract:.0f} ms, "
          f"PNG encode of the output {png_ms:.1f} ms (same run, for scale)")
    print(f"embed / a {args.check_ms:.0f} ms check = {embed / args.check_ms:.2f}")


# --------------------------------------------------------------------------- libraries


def _stub_torch() -> None:
    """imwatermark imports torch at module level only for rivaGan's tensor reshaping."""
    if "torch" not in sys.modules:
        sys.modules["torch"] = types.ModuleType("torch")


class _Riva:
    """imwatermark's rivaGan models (shipped ONNX), run with onnxruntime, 32 bits."""

    def __init__(self) -> None:
        import imwatermark
        import onnxruntime

        folder = Path(imwatermark.__file__).parent
        opts = onnxruntime.SessionOptions()
        opts.log_severity_level = 3
        self.enc = onnxruntime.InferenceSession(str(folder / "rivagan_encoder.onnx"), opts)
        self.dec = onnxruntime.InferenceSession(str(folder / "rivagan_decoder.onnx"), opts)

    def embed(self, image: Pixels, bits: np.ndarray) -> Pixels:
        frame = image.astype(np.float32)[None] / 127.5 - 1.0  # 1,H,W,3
        frame = frame.transpose(3, 0, 1, 2)[None]  # 1,3,1,H,W
        out = self.enc.run(None, {"frame": frame, "data": bits[None].astype(np.float32)})[0]
        out = np.clip(out, -1, 1)[0, :, 0].transpose(1, 2, 0)
        return ((out + 1.0) * 127.5).astype(np.uint8)

    def extract(self, image: Pixels) -> np.ndarray:
        frame = image.astype(np.float32)[None] / 127.5 - 1.0
        frame = frame.transpose(3, 0, 1, 2)[None]
        data = self.dec.run(None, {"frame": frame})[0][0]
        return (data > 0.52).astype(np.uint8)


def libraries(args: argparse.Namespace) -> None:
    _stub_torch()
    with contextlib.redirect_stdout(io.StringIO()):
        from blind_watermark import WaterMark
    from imwatermark import WatermarkDecoder, WatermarkEncoder

    images = [(n, _fit(i, 1024)) for n, i in bench_images(args.images)]
    rng = np.random.default_rng(3)
    riva = _Riva()

    def blind(image: Pixels, bits: np.ndarray) -> tuple[Callable[[Pixels], np.ndarray], Pixels]:
        with contextlib.redirect_stdout(io.StringIO()):
            wm = WaterMark(password_img=1, password_wm=1)
            wm.read_img(img=image)
            wm.read_wm(bits.astype(bool), mode="bit")
            marked = np.clip(wm.embed(), 0, 255).round().astype(np.uint8)

        def read(suspect: Pixels) -> np.ndarray:
            with contextlib.redirect_stdout(io.StringIO()):
                reader = WaterMark(password_img=1, password_wm=1)
                return np.asarray(reader.extract(embed_img=suspect, wm_shape=bits.size,
                                                 mode="bit")) > 0.5
        return read, marked

    def imw(method: str) -> Callable[[Pixels, np.ndarray], tuple[Callable, Pixels]]:
        def run(image: Pixels, bits: np.ndarray) -> tuple[Callable, Pixels]:
            encoder = WatermarkEncoder()
            encoder.set_watermark("bits", bits.tolist())
            marked = encoder.encode(image, method)

            def read(suspect: Pixels) -> np.ndarray:
                decoder = WatermarkDecoder("bits", bits.size)
                return np.asarray(decoder.decode(suspect, method), dtype=np.uint8)
            return read, marked
        return run

    def rivagan(image: Pixels, bits: np.ndarray) -> tuple[Callable, Pixels]:
        return riva.extract, riva.embed(image, bits)

    def ours(image: Pixels, bits: np.ndarray) -> tuple[Callable, Pixels]:
        marker = TiledWatermarker(KEY)
        payload = np.packbits(bits).tobytes()
        marked = marker.embed(image, payload)

        def read(suspect: Pixels) -> np.ndarray:
            return np.unpackbits(np.frombuffer(marker.extract(suspect).bits, np.uint8))
        return read, marked

    schemes: dict[str, tuple[int, Callable]] = {
        "blind-watermark 0.4.4": (64, blind),
        "imwatermark dwtDct": (64, imw("dwtDct")),
        "imwatermark dwtDctSvd": (64, imw("dwtDctSvd")),
        "imwatermark rivaGan": (32, rivagan),
        "this module (TiledWatermarker)": (64, ours),
    }
    labels = ["JPEG q90", "JPEG q50", "resize 50 %", "crop 10 % top-left",
              "brightness +20 %", "combined: crop 10 %, resize 50 %, JPEG q70"]
    print(f"{len(images)} images at 1024 px; bit accuracy (a chance read scores ~50 %); "
          "an image counts as read when >= 95 % of its bits are right\n")
    print("| scheme | bits | embed ms | extract ms | PSNR dB | "
          + " | ".join(labels) + " |")
    print("|---" * (5 + len(labels)) + "|")
    for name, (nbits, make) in schemes.items():
        embed_ms, extract_ms, psnrs = [], [], []
        acc: dict[str, list[float]] = {label: [] for label in labels}
        for _, image in images:
            bits = rng.integers(0, 2, nbits).astype(np.uint8)
            start = time.perf_counter()
            read, marked = make(image, bits)
            embed_ms.append((time.perf_counter() - start) * 1e3)
            psnrs.append(_psnr(image, marked))
            for label in labels:
                suspect = TRANSFORMS[label](marked)
                start = time.perf_counter()
                got = np.asarray(read(suspect)).astype(np.uint8).ravel()[:nbits]
                extract_ms.append((time.perf_counter() - start) * 1e3)
                acc[label].append(float(np.mean(got == bits)))
        cells = [f"{statistics.mean(acc[label]):.0%} ({sum(a >= 0.95 for a in acc[label])}"
                 f"/{len(images)})" for label in labels]
        print(f"| {name} | {nbits} | {statistics.median(embed_ms):.0f} | "
              f"{statistics.median(extract_ms):.0f} | {statistics.median(psnrs):.1f} | "
              + " | ".join(cells) + " |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("robustness", "false-traces", "cost", "libraries"):
        p = sub.add_parser(name)
        p.add_argument("--images", type=int, default={"robustness": 28, "false-traces": 300,
                                                      "cost": 1, "libraries": 8}[name])
        p.add_argument("--strength", type=float, default=2.2)
        p.add_argument("--min-sync-z", type=float, default=9.0)
        p.add_argument("--max-distance", type=int, default=4)
        p.add_argument("--runs", type=int, default=20)
        p.add_argument("--check-ms", type=float, default=45.0)
        p.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args()
    {"robustness": robustness, "false-traces": false_traces, "cost": cost,
     "libraries": libraries}[args.command](args)


if __name__ == "__main__":
    main()
