"""The ``gate`` command: same operations as the SDK, JSON output, exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gate.cli import EXIT_DENY, EXIT_NEEDS_CONSENT, app
from tests.conftest import noise_png

runner = CliRunner()


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("GATE_DETECTOR", "fake")
    monkeypatch.setenv("GATE_EMBEDDER", "fake")
    monkeypatch.setenv("GATE_DATA_DIR", str(tmp_path / "data"))
    for i in (1, 2, 3):
        (tmp_path / f"p{i}.png").write_bytes(noise_png(i))
    return tmp_path


def run(*args: str) -> tuple[int, object]:
    result = runner.invoke(app, list(args))
    try:
        return result.exit_code, json.loads(result.stdout)
    except ValueError:
        return result.exit_code, result.stdout


def test_full_cli_lifecycle(env: Path) -> None:
    code, ada = run("enroll", str(env / "p1.png"), "--name", "Ada", "--json")
    assert code == 0 and ada["status"] == "protected"  # type: ignore[index]
    code, bob = run("enroll", str(env / "p2.png"), "--name", "Bob", "--status", "consenting",
                    "--owner-app", "studio", "--owner-user", "bob-account", "--json")
    assert code == 0
    code, grant = run("grant", bob["subject_id"], "--app", "studio",  # type: ignore[index]
                      "--operations", "face_swap,img2img", "--content", "general", "--json")
    assert code == 0 and grant["operations"] == ["face_swap", "img2img"]  # type: ignore[index]
    code, d = run("check", f"target={env / 'p2.png'}", "--operation", "face_swap",
                  "--app", "studio", "--user", "u1", "--json")
    assert code == 0 and d["verdict"] == "allow"  # type: ignore[index]
    assert d["faces"][0]["identity"] == "consented"  # type: ignore[index]
    code, d = run("check", str(env / "p1.png"), "--operation", "face_swap", "--app", "studio",
                  "--json")
    assert code == EXIT_DENY and d["reasons"][0]["rule_id"] == "core.protected_subject"  # type: ignore[index]
    code, _ = run("revoke", grant["grant_id"], "--json")  # type: ignore[index]
    assert code == 0
    code, d = run("check", str(env / "p2.png"), "--operation", "face_swap", "--app", "studio",
                  "--json")
    assert code == EXIT_NEEDS_CONSENT
    code, _ = run("erase", ada["subject_id"], "--json")  # type: ignore[index]
    assert code == 0
    code, d = run("check", str(env / "p1.png"), "--operation", "nudify", "--app", "studio",
                  "--json")
    assert code == EXIT_DENY and d["faces"][0]["identity"] == "unknown"  # type: ignore[index]
    code, v = run("audit", "verify", "--json")
    assert code == 0 and v["ok"] is True  # type: ignore[index]
    code, subjects = run("subjects", "--json")
    assert code == 0 and [s["display_name"] for s in subjects] == ["Bob"]  # type: ignore[union-attr,index]


def test_human_output_and_bad_input(env: Path) -> None:
    code, out = run("check", str(env / "p3.png"), "--operation", "face_swap", "--app", "a")
    assert code == EXIT_NEEDS_CONSENT
    assert "consent.unknown_face_sensitive" in str(out)
    (env / "bad.jpg").write_bytes(b"\xff\xd8\xff garbage")
    result = runner.invoke(app, ["check", str(env / "bad.jpg"), "--operation", "img2img",
                                 "--app", "a"])
    assert result.exit_code != 0
    result = runner.invoke(app, ["check", str(env / "p3.png"), "--operation", "deepfake",
                                 "--app", "a"])
    assert result.exit_code != 0


def test_gate_errors_exit_3_with_a_safe_message(env: Path) -> None:
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "gate.cli", "erase", "sub_nope"],
                          capture_output=True, text=True, env={**__import__("os").environ})
    assert proc.returncode == 3
    assert "not_found" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_keys_rotate_reencrypts_templates(env: Path) -> None:
    run("enroll", str(env / "p1.png"), "--name", "Ada", "--json")
    code, out = run("keys", "rotate", "--json")
    assert code == 0 and out["reencrypted"] == 1  # type: ignore[index]
    code, d = run("check", str(env / "p1.png"), "--operation", "face_swap", "--app", "a",
                  "--json")
    assert code == EXIT_DENY and d["faces"][0]["identity"] == "protected"  # type: ignore[index]
