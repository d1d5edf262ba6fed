"""Bounded atheris runs of the decoder and policy-parser targets (longer runs: see the
targets' docstrings). A crash (any exception other than the documented error) fails."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

pytest.importorskip("atheris")
RUNS = 3000


def _seed_images(folder: Path) -> None:
    from PIL import Image

    image = Image.new("RGB", (24, 16), (200, 120, 40))
    for fmt in ("PNG", "JPEG", "GIF", "WEBP", "BMP"):
        buf = io.BytesIO()
        image.save(buf, format=fmt)
        (folder / f"seed.{fmt.lower()}").write_bytes(buf.getvalue())


def _run(target: str, corpus: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(REPO / "tests" / "fuzz" / target), f"-runs={RUNS}",
         "-max_len=4096", "-rss_limit_mb=2048", "-timeout=10", str(corpus)],
        cwd=REPO, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_fuzz_decoder(tmp_path: Path) -> None:
    _seed_images(tmp_path)
    proc = _run("fuzz_decode.py", tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Done" in proc.stderr


@pytest.mark.slow
def test_fuzz_policy_parser(tmp_path: Path) -> None:
    for policy in (REPO / "policies").glob("*.yaml"):
        (tmp_path / policy.name).write_bytes(policy.read_bytes())
    proc = _run("fuzz_policy.py", tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Done" in proc.stderr
