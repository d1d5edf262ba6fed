"""Memory of a burst of huge images through the sidecar (issue 19.3).

Starts a real sidecar (uvicorn, real models, SQLite) twice on the same machine: once with
the decode budget off (``GATE_DECODE_BUDGET_PIXELS`` larger than any burst: the baseline)
and once with the default budget. Each time it sends 8 concurrent requests, each with a
different 7000x7000 PNG, to ``/v1/consent-requests`` and then to ``/v1/check``, and samples
the server's resident memory (``/proc/PID/status``): the rise at the peak and what is
still held a few seconds after the burst.

    .venv/bin/python benchmarks/decode_memory.py [--size 7000] [--clients 8]
"""

from __future__ import annotations

import argparse
import base64
import io
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.e2e.conftest import create_key, free_port, sqlite_url  # noqa: E402


def png(size: int, seed: int) -> bytes:
    """A smooth (well-compressing, under the 20 MiB limit) but distinct large PNG."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    a, b, c = rng.uniform(0.5, 3.0, 3)
    img = np.stack([np.sin(a * 6 * x + seed), np.cos(b * 6 * y), np.sin(c * 6 * (x + y))], -1)
    pixels = ((img + 1) * 127.5).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG", compress_level=6)
    return buf.getvalue()


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def run(budget: int, images: list[bytes], clients: int) -> dict[str, float]:
    data = Path(tempfile.mkdtemp(prefix="gate-mem-"))
    port = free_port()
    env = {**os.environ, "GATE_DATA_DIR": str(data), "GATE_DECODE_BUDGET_PIXELS": str(budget),
           "GATE_API_RATE_LIMIT_PER_S": "0"}
    server = subprocess.Popen([sys.executable, "-m", "gate.cli", "serve", "--port", str(port),
                               "--data-dir", str(data)], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(240):
            try:
                if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        key = create_key(sqlite_url(data), "bench", ["check"])
        headers = {"Authorization": f"Bearer {key}"}
        start = rss_mb(server.pid)
        peak = [start]
        done = threading.Event()

        def sample() -> None:
            while not done.is_set():
                peak[0] = max(peak[0], rss_mb(server.pid))
                time.sleep(0.05)

        sampler = threading.Thread(target=sample)
        sampler.start()
        started = time.perf_counter()
        for route in ("consent", "check"):
            def send(i: int, route: str = route) -> None:
                body = base64.b64encode(images[i]).decode()
                with httpx.Client(timeout=300) as client:
                    if route == "consent":
                        client.post(f"{base}/v1/consent-requests", headers=headers,
                                    json={"image": body, "operation": "face_swap"})
                    else:
                        client.post(f"{base}/v1/check", headers=headers,
                                    json={"operation": "img2img",
                                          "images": [{"role": "init", "data_b64": body}]})

            threads = [threading.Thread(target=send, args=(i,)) for i in range(clients)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        elapsed = time.perf_counter() - started
        time.sleep(3)
        done.set()
        sampler.join()
        after = rss_mb(server.pid)
        return {"start_mb": start, "peak_rise_mb": peak[0] - start,
                "held_after_mb": after - start, "seconds": elapsed}
    finally:
        server.terminate()
        server.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=7000)
    parser.add_argument("--clients", type=int, default=8)
    args = parser.parse_args()
    images = [png(args.size, seed) for seed in range(args.clients)]
    print(f"{args.clients} concurrent {args.size}x{args.size} PNGs "
          f"({min(map(len, images)) / 1e6:.1f}-{max(map(len, images)) / 1e6:.1f} MB each), "
          "POST /v1/consent-requests then /v1/check")
    base = run(10**12, images, args.clients)
    bounded = run(64_000_000, images, args.clients)
    print(f"{'':<28}{'peak rise':>12}{'held after':>12}{'seconds':>10}")
    for name, r in (("budget off (baseline)", base), ("budget 64 Mpx (default)", bounded)):
        print(f"{name:<28}{r['peak_rise_mb']:>10.0f} MB{r['held_after_mb']:>10.0f} MB"
              f"{r['seconds']:>10.1f}")
    print(f"peak rise ratio: {bounded['peak_rise_mb'] / max(base['peak_rise_mb'], 1):.2f}x")


if __name__ == "__main__":
    main()
