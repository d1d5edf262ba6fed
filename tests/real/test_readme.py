"""Docs are code: the README's SDK and CLI examples run, on real photos and models."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from gate.demo import demo_photos, rendition
from tests.conftest import REPO

pytestmark = pytest.mark.real
README = (REPO / "README.md").read_text(encoding="utf-8")


def _block(heading: str, lang: str) -> str:
    section = README.split(heading, 1)[1]
    match = re.search(rf"```{lang}\n(.*?)```", section, re.S)
    assert match, f"no {lang} block under {heading}"
    return match.group(1)


def test_readme_sdk_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    photos = demo_photos()
    monkeypatch.chdir(tmp_path)
    namespace = {
        "ada_jpeg": rendition(photos["ada"]),
        "bob_png": photos["bob"].read_bytes(),
        "photo_jpeg": rendition(photos["bob"], mirror=True, scale=2.5, canvas=480),
    }
    exec(compile(_block("## SDK quick start", "python"), "README.md", "exec"), namespace)
    d = namespace["d"]
    assert d.verdict == "allow"  # type: ignore[attr-defined]
    assert d.faces[0].identity == "consented"  # type: ignore[attr-defined]


def test_readme_cli_example_runs(tmp_path: Path) -> None:
    photos = demo_photos()
    (tmp_path / "ada.jpg").write_bytes(rendition(photos["ada"]))
    (tmp_path / "bob.png").write_bytes(photos["bob"].read_bytes())
    (tmp_path / "photo.jpg").write_bytes(rendition(photos["bob"], mirror=True, scale=2.5,
                                                   canvas=480))
    env = {**os.environ, "GATE_DATA_DIR": str(tmp_path / "data")}
    ids: dict[str, str] = {}
    for line in _block("## CLI quick start", "sh").strip().splitlines():
        args = shlex.split(line)
        assert args[0] == "gate"
        args = [ids.get(a, a) for a in args[1:]]
        proc = subprocess.run([sys.executable, "-m", "gate.cli", *args], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode in (0, 10, 11), (line, proc.stderr[-2000:])
        for token in re.findall(r"\b(sub_[0-9a-f]+|gr_[0-9a-f]+)\b", proc.stdout):
            ids["SUBJECT_ID" if token.startswith("sub_") else "GRANT_ID"] = token
    assert "SUBJECT_ID" in ids and "GRANT_ID" in ids
