"""An app embeds the gate with plain pip (issue 14): in a fresh virtualenv,
``pip install <checkout>`` (no extras, no Makefile step) and the README's SDK quick start
works on real photos, apparent age included; ``pip install '<checkout>[server]'`` and
``gate serve`` answers ``/readyz``. Slow (it installs every dependency, from pip's cache
when warm): it is what CI proves on a clean clone."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import REPO
from tests.e2e.conftest import free_port

pytestmark = [pytest.mark.slow, pytest.mark.real]


def _source_copy(dest: Path) -> Path:
    """The checkout as a clean clone would have it (tracked and new, not ignored)."""
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO,
                            capture_output=True, text=True, check=True).stdout.splitlines()
    for name in listed:
        source = REPO / name
        if source.is_file() and not name.startswith(("clients/", "tests/")):
            target = dest / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    return dest


def _run(args: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GATE_", "PYTHON"))}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return subprocess.run(args, capture_output=True, text=True, env=env, timeout=1200,
                          **kwargs)  # type: ignore[call-overload,no-any-return]


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("fresh")
    src = _source_copy(root / "src")
    made = _run([sys.executable, "-m", "venv", str(root / "venv")])
    assert made.returncode == 0, made.stderr
    pip = root / "venv" / "bin" / "pip"
    installed = _run([str(pip), "install", "-q", str(src)])
    assert installed.returncode == 0, installed.stderr[-4000:]
    return root


def test_plain_pip_install_runs_the_readme_quick_start(venv: Path, faces_dir: Path) -> None:
    python = venv / "venv" / "bin" / "python"
    bare = _run([str(python), "-c", "import fastapi"])
    assert bare.returncode != 0, "the bare SDK install must not need the server extra"
    verify = _run([str(venv / "venv" / "bin" / "gate"), "models", "verify"])
    assert verify.returncode == 0, verify.stderr
    assert "age " in verify.stdout  # the CC0 age weights came with the wheel
    script = venv / "readme_example.py"
    shutil.copy2(REPO / "tests" / "readme_example.py", script)
    work = venv / "work"
    work.mkdir()
    ran = _run([str(python), str(script), str(REPO / "README.md"), str(faces_dir),
                str(work)], cwd=work)
    assert ran.returncode == 0, ran.stderr[-4000:]
    assert "README example OK" in ran.stdout


def test_server_extra_then_gate_serve(venv: Path) -> None:
    pip = venv / "venv" / "bin" / "pip"
    installed = _run([str(pip), "install", "-q", f"{venv / 'src'}[server]"])
    assert installed.returncode == 0, installed.stderr[-4000:]
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GATE_", "PYTHON"))}
    log = venv / "serve.log"
    with log.open("wb") as sink:
        proc = subprocess.Popen([str(venv / "venv" / "bin" / "gate"), "serve", "--port",
                                 str(port), "--data-dir", str(venv / "serve-data")],
                                env=env, stdout=subprocess.DEVNULL, stderr=sink)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2)
                if r.status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None, log.read_text()[-3000:]
            time.sleep(0.5)
        assert r.status_code == 200 and r.json()["ready"] is True
    finally:
        proc.terminate()
        proc.wait(timeout=30)
