"""Checks per second at 1, 4 and 16 concurrent clients, with and without micro-batching
of embeddings across requests (``gate.batching``), measured in the same run.

Each client thread sends ``FaceGate.check`` requests (face_swap with two real one-face
photos, so each check embeds two faces, plus a mirror each with flip averaging) with new
bytes on every call (a few pixels changed, re-encoded), so the analysis cache answers
nothing; cache hits are reported apart (they must be 0). Both gates share one database
and the same models; they alternate per concurrency level so load drift hits both.

    .venv/bin/python benchmarks/batching.py [--seconds 20] [--window-ms 2] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def _photos() -> list[np.ndarray]:
    from gate.demo import demo_photos

    out = []
    for path in list(demo_photos().values())[:2]:
        image = cv2.imread(str(path))
        out.append(cv2.resize(image, (640, 640), interpolation=cv2.INTER_AREA))
    return out


def _fresh(image: np.ndarray, n: int) -> bytes:
    """The image with a few pixels changed: new bytes, same faces."""
    copy = image.copy()
    copy[n % copy.shape[0], (n // copy.shape[0]) % copy.shape[1]] ^= 0x5A
    copy[0, 0] = (n % 256, (n // 256) % 256, 7)
    return cv2.imencode(".jpg", copy, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()


def _throughput(gate: Any, photos: list[np.ndarray], clients: int, seconds: float,
                counter: list[int]) -> dict[str, float]:
    from gate.types import GateRequest, ImageInput, Requester

    stop = time.monotonic() + seconds
    done = [0] * clients
    latencies: list[float] = []
    lock = threading.Lock()

    def client(k: int) -> None:
        while time.monotonic() < stop:
            with lock:
                counter[0] += 1
                n = counter[0]
            request = GateRequest(
                operation="face_swap", requester=Requester(app_id="bench"),
                images=[ImageInput(role="target", data=_fresh(photos[0], n)),
                        ImageInput(role="source", data=_fresh(photos[1], n))])
            started = time.perf_counter()
            decision = gate.check(request)
            elapsed = (time.perf_counter() - started) * 1000
            assert decision.verdict in ("allow", "needs_consent", "deny")
            with lock:
                latencies.append(elapsed)
            done[k] += 1

    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.monotonic() - started
    latencies.sort()
    return {"checks_per_s": round(sum(done) / wall, 2),
            "p50_ms": round(latencies[len(latencies) // 2], 1),
            "p95_ms": round(latencies[int(0.95 * (len(latencies) - 1))], 1),
            "checks": sum(done)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--window-ms", type=float, default=2.0)
    parser.add_argument("--clients", default="1,4,16")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    from gate.engine import FaceGate

    photos = _photos()
    data = Path(tempfile.mkdtemp(prefix="gate-batch-"))
    plain = FaceGate.open(data, batch_window_ms=0, check_workers=16)
    batched = FaceGate.open(data, batch_window_ms=args.window_ms, check_workers=16)
    counter = [0]
    rows: list[dict[str, Any]] = []
    for clients in (int(c) for c in args.clients.split(",")):
        for name, gate in (("unbatched", plain), ("batched", batched)):
            result = _throughput(gate, photos, clients, args.seconds, counter)
            rows.append({"clients": clients, "path": name, **result})
            print(f"{clients:>3} clients  {name:<10} {result['checks_per_s']:>7.2f} checks/s"
                  f"  p50 {result['p50_ms']:>7.1f} ms  p95 {result['p95_ms']:>7.1f} ms",
                  flush=True)
        base = rows[-2]["checks_per_s"]
        ratio = rows[-1]["checks_per_s"] / base if base else float("nan")
        print(f"{clients:>3} clients  batched / unbatched = {ratio:.2f}x", flush=True)
    embedder = batched.parts.embedder
    batcher = getattr(embedder, "batcher", None)
    hits = plain.faces.cache_hits + batched.faces.cache_hits
    summary = {"rows": rows, "cache_hits": hits, "window_ms": args.window_ms,
               "mean_batch_items": round(batcher.items / batcher.batches, 2)
               if batcher and batcher.batches else None}
    print(f"cache hits (must be 0): {hits}; mean crops per batched call: "
          f"{summary['mean_batch_items']}")
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))
    plain.close()
    batched.close()


if __name__ == "__main__":
    main()
