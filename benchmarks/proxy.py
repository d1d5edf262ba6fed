"""Latency the proxy adds to an allowed request: client -> proxy -> fake upstream vs client
-> fake upstream directly, same run, same requests.

Both servers are real uvicorn processes on free loopback ports: a fake OpenAI Images API
that answers one 512x512 JPEG with one (unknown) face as ``b64_json``, and the proxy
(``python -m gate.proxy.cli openai ... --app bench``) in front of it. Two requests:

* ``generations`` (txt2img): the prompt is screened before, the output image after;
* ``variations`` (img2img): the input image is checked before, the output image after.

The analysis cache is off in the proxy, so every check runs the whole pipeline. Requests
are sequential (one client); N per row after 3 warm-up requests. Baseline for the added
latency: the same engine calls in-process (``check`` then ``check_output``), same run, so
"beyond engine" is what the proxy itself costs (HTTP hop, parsing, labels, forwarding).

    .venv/bin/python benchmarks/proxy.py                 # fake models and real models
    .venv/bin/python benchmarks/proxy.py --models fake -n 100 [--json out.json]
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
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from photos import face_jpeg

REPO = Path(__file__).resolve().parent.parent
FAKE_MODELS = {"GATE_DETECTOR": "fake", "GATE_EMBEDDER": "fake", "GATE_MATCH_THRESHOLD": "0.9"}


def upstream_app() -> Any:
    """The fake OpenAI Images API (run in its own process by ``--serve-upstream``)."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    answer = {"created": 1, "data": [{"b64_json": base64.b64encode(face_jpeg()).decode()}]}

    async def images(request: Request) -> JSONResponse:
        await request.body()
        return JSONResponse(answer)

    return Starlette(routes=[Route("/v1/images/generations", images, methods=["POST"]),
                             Route("/v1/images/variations", images, methods=["POST"])])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(args: list[str], env: dict[str, str], url: str, log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, *args], cwd=REPO, stdout=out,
                                stderr=subprocess.STDOUT,
                                env={**os.environ, "PYTHONPATH": str(REPO), **env})
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{args[0]} exited:\n{log.read_text()[-2000:]}")
        try:
            httpx.get(url + "/", timeout=2)
            return proc
        except httpx.TransportError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"{args[0]} did not start")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def measure(send: Callable[[], httpx.Response], n: int) -> dict[str, float]:
    for _ in range(3):
        assert send().status_code == 200
    times = []
    for _ in range(n):
        t = time.perf_counter()
        r = send()
        times.append((time.perf_counter() - t) * 1000)
        assert r.status_code == 200, r.text[:300]
    return {"p50_ms": round(pct(times, 0.5), 1), "p95_ms": round(pct(times, 0.95), 1)}


def engine_only(models: str, n: int, work: Path) -> dict[str, dict[str, float]]:
    """The engine calls the proxy makes, in-process: check, then check_output."""
    os.environ["GATE_ANALYSIS_CACHE_ITEMS"] = "0"
    sys.path.insert(0, str(REPO))
    from gate.engine import FaceGate
    from gate.types import GateRequest, ImageInput, Requester

    overrides = {"detector": "fake", "embedder": "fake", "match_threshold": 0.9} \
        if models == "fake" else {}
    gate = FaceGate.open(work / f"engine-{models}", **overrides)
    image = face_jpeg()
    who = Requester(app_id="bench")
    cases = {
        "generations": GateRequest(operation="txt2img", prompt="a lighthouse at dusk",
                                   requester=who),
        "variations": GateRequest(operation="img2img", requester=who,
                                  images=[ImageInput(role="init", data=image)]),
    }
    rows = {}
    try:
        for name, request in cases.items():
            def both(r: GateRequest = request) -> float:
                t = time.perf_counter()
                decision = gate.check(r)
                gate.check_output(image, request_id=decision.request_id, requester=who,
                                  operation=r.operation)
                return (time.perf_counter() - t) * 1000
            for _ in range(3):
                both()
            times = [both() for _ in range(n)]
            rows[f"{name} engine"] = {"p50_ms": round(pct(times, 0.5), 1),
                                      "p95_ms": round(pct(times, 0.95), 1)}
    finally:
        gate.close()
    return rows


def run(models: str, n: int, upstream: str, work: Path) -> dict[str, dict[str, float]]:
    port = free_port()
    env = {"GATE_ANALYSIS_CACHE_ITEMS": "0", **(FAKE_MODELS if models == "fake" else {})}
    proxy = start(["-m", "gate.proxy.cli", "openai", upstream, "--app", "bench", "--port",
                   str(port), "--data-dir", str(work / f"data-{models}")], env,
                  f"http://127.0.0.1:{port}", work / f"proxy-{models}.log")
    image = face_jpeg()
    rows: dict[str, dict[str, float]] = {}
    try:
        with httpx.Client(timeout=120) as client:
            for name, path, kwargs in (
                    ("generations", "/v1/images/generations",
                     {"json": {"prompt": "a lighthouse at dusk", "n": 1}}),
                    ("variations", "/v1/images/variations",
                     {"files": {"image": ("in.jpg", image, "image/jpeg")}})):
                for via, base in (("direct", upstream), ("proxy", f"http://127.0.0.1:{port}")):
                    rows[f"{name} {via}"] = measure(
                        lambda b=base, p=path, kw=kwargs: client.post(b + p, **kw), n)
                direct, proxied = rows[f"{name} direct"], rows[f"{name} proxy"]
                rows[f"{name} added"] = {k: round(proxied[k] - direct[k], 1) for k in direct}
    finally:
        proxy.terminate()
        proxy.wait(15)
    rows.update(engine_only(models, n, work))
    for name in ("generations", "variations"):
        added, engine = rows[f"{name} added"], rows[f"{name} engine"]
        # A difference of two p95s under load is noise; the p50 difference is the figure.
        rows[f"{name} beyond engine"] = {"p50_ms": round(added["p50_ms"] - engine["p50_ms"], 1)}
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", choices=["fake", "real", "both"], default="both")
    parser.add_argument("-n", type=int, default=0, help="requests per row (default 100 fake, "
                                                          "30 real)")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--serve-upstream", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_upstream:
        import uvicorn

        uvicorn.run(upstream_app(), host="127.0.0.1", port=args.serve_upstream,
                    log_level="warning", access_log=False)
        return
    out: dict[str, dict[str, dict[str, float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        port = free_port()
        upstream = f"http://127.0.0.1:{port}"
        fake = start([str(Path(__file__).resolve()), "--serve-upstream", str(port)], {},
                     upstream, work / "upstream.log")
        try:
            for models in (["fake", "real"] if args.models == "both" else [args.models]):
                n = args.n or (100 if models == "fake" else 30)
                out[models] = run(models, n, upstream, work)
                print(f"\n{models} models, n={n}, load average {os.getloadavg()[0]:.1f}")
                print(f"{'':26} {'p50 ms':>8} {'p95 ms':>8}")
                for row, figures in out[models].items():
                    p95 = f"{figures['p95_ms']:8.1f}" if "p95_ms" in figures else f"{'-':>8}"
                    print(f"{row:26} {figures['p50_ms']:8.1f} {p95}")
        finally:
            fake.terminate()
            fake.wait(15)
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
