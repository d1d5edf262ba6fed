"""Time and memory of ``decode_image`` against a naive Pillow full decode.

Run from the repository root::

    .venv/bin/python benchmarks/decode_bomb.py

Every (file, decoder) pair runs in a fresh subprocess so ``ru_maxrss`` (peak resident
memory, which only ever grows within a process) measures that decode alone. Files are
built in another subprocess: on Linux a child inherits its parent's RSS high-water mark
through fork/exec, so the measuring parent must stay small. Reported per
run: outcome, wall time, tracemalloc peak (Python and numpy allocations; Pillow's C
buffers are invisible to it) and growth of peak RSS (everything, including libjpeg,
zlib, libwebp and Pillow's own buffers).

The naive decoder is ``Image.open(path).convert("RGB")`` on every frame, with Pillow's
default bomb protection unless the case says ``MAX_IMAGE_PIXELS=None``.
"""

from __future__ import annotations

import argparse
import io
import json
import resource
import struct
import subprocess
import sys
import tempfile
import time
import tracemalloc
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageSequence

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gate.errors import GateError  # noqa: E402
from gate.imaging import decode_image  # noqa: E402

# --------------------------------------------------------------------------- files


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_one_bit(side: int) -> bytes:
    """A valid ``side x side`` 1-bit PNG of zeros: tiny on disk, 3 bytes/pixel as RGB."""
    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    comp = zlib.compressobj(9)
    row = b"\x00" * (1 + (side + 7) // 8)
    idat = b"".join(comp.compress(row) for _ in range(side)) + comp.flush()
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat)
            + _png_chunk(b"IEND", b""))


def png_header_only(side: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr)
            + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + _png_chunk(b"IEND", b""))


def _save(im: Image.Image, fmt: str, **params: object) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **params)
    return buf.getvalue()


def gif_single_colour(side: int) -> bytes:
    return _save(Image.new("P", (side, side), 0), "GIF")


def webp_single_colour(side: int) -> bytes:
    return _save(Image.new("RGB", (side, side), (20, 40, 60)), "WEBP", lossless=True,
                 method=0)


def gif_many_frames(count: int) -> bytes:
    head = b"GIF89a\x01\x00\x01\x00\x80\x00\x00" + b"\x00\x00\x00\xff\xff\xff"
    frame = b"\x2c\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02\x44\x01\x00"
    return head + frame * count + b";"


def real_jpeg() -> bytes:
    """A 4000x3000 photo-like JPEG: smooth gradients plus sensor-like noise."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:3000, 0:4000].astype(np.float32)
    base = np.stack([x / 4000 * 200, y / 3000 * 180, (x + y) / 7000 * 160], axis=-1)
    noise = rng.normal(0, 12, (3000, 4000, 3)).astype(np.float32)
    arr = np.clip(base + 30 + noise, 0, 255).astype(np.uint8)
    return _save(Image.fromarray(arr), "JPEG", quality=90)


CASES: dict[str, tuple[str, Callable[[], bytes], bool]] = {
    # name: (description, builder, naive run without Pillow's bomb limit)
    "png_header_100000": ("PNG header claiming 100000x100000", lambda: png_header_only(100_000),
                          False),
    "png_9000_1bit": ("valid 9000x9000 1-bit PNG (81 MP)", lambda: png_one_bit(9000), False),
    "png_19000_1bit": ("valid 19000x19000 1-bit PNG (361 MP)", lambda: png_one_bit(19_000),
                       True),
    "gif_9000": ("valid 9000x9000 single-colour GIF (81 MP)", lambda: gif_single_colour(9000),
                 False),
    "webp_9000": ("valid 9000x9000 single-colour lossless WebP",
                  lambda: webp_single_colour(9000), False),
    "gif_10000_frames": ("GIF with 10,000 1x1 frames", lambda: gif_many_frames(10_000),
                         False),
    "jpeg_4000x3000": ("real 4000x3000 JPEG (noise + gradient)", real_jpeg, False),
}

# --------------------------------------------------------------------------- child


def _naive(data: bytes) -> str:
    with Image.open(io.BytesIO(data)) as im:
        shapes = [np.asarray(frame.convert("RGB")).shape for frame in ImageSequence.Iterator(im)]
    return f"decoded {len(shapes)} frame(s) {shapes[0][1]}x{shapes[0][0]}"


def _ours(data: bytes) -> str:
    result = decode_image(data)
    shape = result.frames[0].pixels.shape
    return f"decoded {len(result.frames)} frame(s) {shape[1]}x{shape[0]}"


def _attempt(run: Callable[[bytes], str], data: bytes) -> str:
    try:
        return run(data)
    except GateError as exc:
        return exc.code
    except Exception as exc:
        return type(exc).__name__


def child(method: str, path: str, unlimited: bool) -> None:
    """Measure one decode; print one JSON line."""
    data = Path(path).read_bytes()
    run = _ours if method == "ours" else _naive
    if unlimited:
        Image.MAX_IMAGE_PIXELS = None
    _attempt(_ours, png_one_bit(8))  # warm up imports and plugins
    _attempt(_naive, png_one_bit(8))
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    outcome = _attempt(run, data)
    seconds = time.perf_counter() - start
    rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    tracemalloc.start()
    _attempt(run, data)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    print(json.dumps({"outcome": outcome, "seconds": seconds, "traced": peak,
                      "rss": (rss_after - rss_before) * 1024}))


# --------------------------------------------------------------------------- parent


def _measure(method: str, path: Path, unlimited: bool) -> dict[str, object]:
    args = [sys.executable, __file__, "--child", method, str(path)]
    if unlimited:
        args.append("--unlimited")
    done = subprocess.run(args, capture_output=True, text=True, check=False, cwd=ROOT)
    if done.returncode != 0:
        return {"outcome": f"crashed ({done.returncode})", "seconds": float("nan"),
                "traced": 0, "rss": 0}
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def _mb(value: object) -> str:
    return f"{float(str(value)) / 1e6:9.1f}"


def _ratio(a: object, b: object) -> str:
    num, den = float(str(a)), float(str(b))
    if den <= 0:
        return "  (ours 0)" if num > 0 else "       n/a"
    return f"{num / den:9.1f}x"


def build(directory: str) -> None:
    """Write every case's file into ``directory``."""
    for name, (_, builder, _) in CASES.items():
        (Path(directory) / name).write_bytes(builder())


def main() -> None:
    header = (f"{'case':<20} {'method':<17} {'outcome':<34} {'ms':>9} {'traced MB':>9} "
              f"{'RSS MB':>9}")
    print(header)
    print("-" * len(header))
    ratios: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, __file__, "--build", tmp], check=True, cwd=ROOT)
        for name, (description, _, unlimited) in CASES.items():
            path = Path(tmp) / name
            print(f"# {description}: {path.stat().st_size:,} bytes")
            rows = {"ours": _measure("ours", path, False)}
            naive = "naive" + (" (no limit)" if unlimited else "")
            rows[naive] = _measure("naive", path, unlimited)
            for method, row in rows.items():
                print(f"{name:<20} {method:<17} {str(row['outcome'])[:34]:<34} "
                      f"{float(str(row['seconds'])) * 1000:9.3f} {_mb(row['traced'])} "
                      f"{_mb(row['rss'])}")
            ours, other = rows["ours"], rows[naive]
            ratios.append(f"{name:<20} time {_ratio(other['seconds'], ours['seconds'])}  "
                          f"RSS {_ratio(other['rss'], ours['rss'])}  "
                          f"traced {_ratio(other['traced'], ours['traced'])}")
    print("\nnaive / ours (higher is better for decode_image):")
    print("\n".join(ratios))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", nargs=2, metavar=("METHOD", "PATH"))
    parser.add_argument("--unlimited", action="store_true")
    parser.add_argument("--build", metavar="DIR")
    options = parser.parse_args()
    if options.build:
        build(options.build)
    elif options.child:
        child(options.child[0], options.child[1], options.unlimited)
    else:
        main()
