"""Latency and throughput of the HTTP sidecar vs the in-process engine, same run.

A real uvicorn server (``python -m gate.api.cli serve``) with the REAL default models
(YuNet + SFace) on a free loopback port, SQLite; N concurrent clients (1, 2, 4, 8) each
POST /v1/check (JSON, base64) with a 1-face 512x512 JPEG (insightface's packaged
Tom_Hanks_54745.png, upscaled) for a fixed time. Baseline: ``FaceGate.check`` in-process
on the same image, measured in the same run. The analysis cache (byte-identical images)
is off on both sides, so every request runs the whole pipeline.

    .venv/bin/python benchmarks/sidecar.py [--seconds 8] [--concurrency 1,2,4,8] [--json out]
    .venv/bin/python benchmarks/sidecar.py --fake-models   # the HTTP layer's own overhead
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
from photos import face_jpeg

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
NO_CACHE = {"GATE_ANALYSIS_CACHE_ITEMS": "0"}


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def summary(latencies_ms: list[float], seconds: float) -> dict[str, float]:
    return {"requests": len(latencies_ms), "p50_ms": round(pct(latencies_ms, 0.5), 1),
            "p95_ms": round(pct(latencies_ms, 0.95), 1),
            "throughput_rps": round(len(latencies_ms) / seconds, 1)}


def in_process(image: bytes, seconds: float, data_dir: Path) -> dict[str, float]:
    os.environ.update(NO_CACHE)
    from gate.engine import FaceGate
    from gate.types import GateRequest, ImageInput, Requester

    gate = FaceGate.open(data_dir)
    request = GateRequest(operation="face_swap", images=[ImageInput(role="target", data=image)],
                          requester=Requester(app_id="bench", user_id="u1"))
    try:
        for _ in range(3):
            assert gate.check(request).faces, "the benchmark photo must show a face"
        latencies: list[float] = []
        started = time.perf_counter()
        while time.perf_counter() - started < seconds:
            t = time.perf_counter()
            gate.check(request)
            latencies.append((time.perf_counter() - t) * 1000)
        return summary(latencies, time.perf_counter() - started)
    finally:
        gate.close()


def start_server(data_dir: Path) -> tuple[subprocess.Popen[bytes], str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, **NO_CACHE, "PYTHONPATH": str(REPO), "GATE_API_RATE_LIMIT_PER_S": "0",
           "GATE_API_LOG_LEVEL": "WARNING"}
    proc = subprocess.Popen([sys.executable, "-m", "gate.api.cli", "serve", "--host",
                             "127.0.0.1", "--port", str(port), "--data-dir", str(data_dir)],
                            cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return proc, url
        except httpx.TransportError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit("the server did not become ready")


def over_http(url: str, token: str, image: bytes, clients: int,
              seconds: float) -> dict[str, float]:
    body = {"operation": "face_swap", "user_id": "u1",
            "images": [{"role": "target", "data_b64": base64.b64encode(image).decode()}]}
    latencies: list[float] = []
    lock = threading.Lock()
    start = threading.Barrier(clients + 1)
    stop_at = [0.0]

    def client() -> None:
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"},
                          timeout=60) as http:
            http.post("/v1/check", json=body).raise_for_status()  # warm the connection
            start.wait()
            mine: list[float] = []
            while time.perf_counter() < stop_at[0]:
                t = time.perf_counter()
                http.post("/v1/check", json=body).raise_for_status()
                mine.append((time.perf_counter() - t) * 1000)
            with lock:
                latencies.extend(mine)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    stop_at[0] = time.perf_counter() + seconds + 60  # provisional, set after the barrier
    start.wait()
    began = time.perf_counter()
    stop_at[0] = began + seconds
    for t in threads:
        t.join()
    return summary(latencies, time.perf_counter() - began)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--concurrency", default="1,2,4,8")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--fake-models", action="store_true",
                        help="fake detector/embedder: measures the sidecar's own overhead")
    args = parser.parse_args()
    if args.fake_models:
        NO_CACHE.update({"GATE_DETECTOR": "fake", "GATE_EMBEDDER": "fake"})
    image = face_jpeg()
    levels = [int(c) for c in args.concurrency.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        base = in_process(image, args.seconds, Path(tmp) / "inproc")
        from gate.api.keys import KeyStore
        from gate.db import make_engine

        data = Path(tmp) / "server"
        data.mkdir()
        store = KeyStore(make_engine(f"sqlite:///{data / 'gate.db'}"))
        token = store.create("bench", ["check"]).token
        store.close()
        proc, url = start_server(data)
        try:
            results = {c: over_http(url, token, image, c, args.seconds) for c in levels}
        finally:
            proc.terminate()
            proc.wait(15)
    cores = os.cpu_count()
    models = "FAKE models" if args.fake_models else "real default models"
    print(f"1-face 512x512 JPEG ({len(image)} bytes), {models}, {cores} cores, "
          f"{args.seconds:g} s per row, analysis cache off")
    print(f"{'':<24}{'p50 ms':>9}{'p95 ms':>9}{'req/s':>9}{'p50 vs in-proc':>16}")
    print(f"{'in-process FaceGate':<24}{base['p50_ms']:>9}{base['p95_ms']:>9}"
          f"{base['throughput_rps']:>9}{'1.00x':>16}")
    for c, r in results.items():
        ratio = r["p50_ms"] / base["p50_ms"]
        print(f"{f'HTTP, {c} client(s)':<24}{r['p50_ms']:>9}{r['p95_ms']:>9}"
              f"{r['throughput_rps']:>9}{ratio:>15.2f}x")
    if args.json:
        args.json.write_text(json.dumps({"in_process": base, "http": results,
                                         "image_bytes": len(image), "cores": cores},
                                        indent=2))


if __name__ == "__main__":
    main()
