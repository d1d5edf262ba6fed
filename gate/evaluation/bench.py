"""``gate bench``: run the standard benchmarks and print a table of the key figures.

The benchmark scripts live in ``benchmarks/`` of the source tree (they compare against
baselines measured in the same run); this command runs the ones that need no extra data.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from gate.settings import REPO_ROOT

BENCHMARKS = REPO_ROOT / "benchmarks"


def run_check_latency(iterations: int, threads: bool) -> dict[str, Any]:
    script = BENCHMARKS / "check_latency.py"
    if not script.is_file():
        raise FileNotFoundError("benchmarks/ is not present (run from a source checkout)")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "bench.json"
        args = [sys.executable, str(script), "--iterations", str(iterations), "--json", str(out)]
        if not threads:
            args.append("--skip-threads")
        subprocess.run(args, check=True, stdout=subprocess.DEVNULL)  # noqa: S603 (our script)
        report: dict[str, Any] = json.loads(out.read_text())
    return report


def rows(report: dict[str, Any]) -> list[tuple[str, str]]:
    check = report["check_1024_one_face"]
    out = [
        ("check p50 / p95 (1-face 1024 JPEG, warm)",
         f"{check['ours']['p50']} / {check['ours']['p95']} ms"),
        ("naive pipeline p50 (same models)", f"{check['naive']['p50']} ms"),
        ("ratio ours / naive (p50)", f"{check['ratio_ours_to_naive_p50']}"),
        ("without robustness passes p50", f"{check['ours_without_robustness']['p50']} ms"),
        ("cache hit p50 (byte-identical image)", f"{check['cache_hit']['p50']} ms"),
        ("stages p50", ", ".join(f"{k} {v}" for k, v in check["stages_p50_ms"].items())),
        ("4000x3000 JPEG decode: ours / full",
         f"{report['phone_photo_4000x3000']['ours']} / {report['phone_photo_4000x3000']['naive']}"),
        ("import gate / cold start to ready",
         f"{report['startup']['import_gate_net_ms']} / "
         f"{report['startup']['cold_start_to_ready_ms']} ms"),
    ]
    for key, value in report.get("throughput_512", {}).items():
        out.append((key.replace("_", " "), f"{value}"))
    return out
