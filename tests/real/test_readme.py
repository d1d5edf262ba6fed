"""Docs are code: the README's SDK and CLI examples run, on real photos and models, and
each step gives exactly the outcome the README describes."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests import readme_example as example
from tests.conftest import REPO

pytestmark = pytest.mark.real
README = REPO / "README.md"


def _block(heading: str, lang: str) -> str:
    section = README.read_text(encoding="utf-8").split(heading, 1)[1]
    match = re.search(rf"```{lang}\n(.*?)```", section, re.S)
    assert match, f"no {lang} block under {heading}"
    return match.group(1)


def test_readme_sdk_example_runs(tmp_path: Path, faces_dir: Path,
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # run() changes directory; restore it afterwards
    assert example.run(README, faces_dir, tmp_path) == {
        "bob": "allow", "ada": "deny", "stranger": "needs_consent"}


#: The exit code each line of the CLI quick start must give (photo.jpg shows Bob).
CLI_EXPECTED = {"enroll": 0, "grant": 0, "check": 0, "revoke": 0, "erase": 0,
                "audit": 0, "models": 0}


def test_readme_cli_example_runs(tmp_path: Path, faces_dir: Path) -> None:
    people = faces_dir / "natural_small"
    for who, (person, names, probe) in (("ada", example.ADA), ("bob", example.BOB)):
        for i, name in enumerate(names, 1):
            (tmp_path / f"{who}{i}.jpg").write_bytes((people / person / name).read_bytes())
        if who == "bob":
            (tmp_path / "photo.jpg").write_bytes((people / person / probe).read_bytes())
    env = {**os.environ, "GATE_DATA_DIR": str(tmp_path / "data")}
    ids: dict[str, str] = {}
    for line in _block("## CLI quick start", "sh").strip().splitlines():
        args = shlex.split(line)
        assert args[0] == "gate"
        args = [ids.get(a, a) for a in args[1:]]
        proc = subprocess.run([sys.executable, "-m", "gate.cli", *args], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == CLI_EXPECTED[args[0]], (line, proc.stdout[-1000:],
                                                          proc.stderr[-2000:])
        if args[0] == "check":
            assert '"verdict": "allow"' in proc.stdout and '"consented"' in proc.stdout
        for token in re.findall(r"\b(sub_[0-9a-f]+|gr_[0-9a-f]+)\b", proc.stdout):
            ids["SUBJECT_ID" if token.startswith("sub_") else "GRANT_ID"] = token
    assert "SUBJECT_ID" in ids and "GRANT_ID" in ids


@pytest.mark.parametrize(("argv", "code"), [
    (["check", "target=x.jpg", "--operation", "deepfake", "--app", "a"], "invalid_request"),
    (["check", "selfie=x.jpg", "--operation", "face_swap", "--app", "a"], "invalid_request"),
    (["check", "target=x.jpg", "--operation", "face_swap", "--app", "a", "--content",
      "erotic"], "invalid_request"),
])
def test_cli_bad_input_is_one_line_or_json_and_exit_3(tmp_path: Path, argv: list[str],
                                                      code: str) -> None:
    """Issue 14, defect 6: no traceback; one line on stderr, or JSON with --json."""
    (tmp_path / "x.jpg").write_bytes(b"\xff\xd8not really")
    env = {**os.environ, "GATE_DATA_DIR": str(tmp_path / "data")}
    plain = subprocess.run([sys.executable, "-m", "gate.cli", *argv], cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=120)
    assert plain.returncode == 3, plain.stderr
    assert "Traceback" not in plain.stderr
    assert plain.stderr.strip().count("\n") == 0 and plain.stderr.startswith(f"error: {code}")
    as_json = subprocess.run([sys.executable, "-m", "gate.cli", *argv, "--json"],
                             cwd=tmp_path, env=env, capture_output=True, text=True,
                             timeout=120)
    assert as_json.returncode == 3 and "Traceback" not in as_json.stderr
    import json

    assert json.loads(as_json.stdout)["error"]["code"] == code
