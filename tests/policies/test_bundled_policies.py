"""The policy packs load from the source tree, else from the copy a wheel carries."""

from __future__ import annotations

import ast
import functools
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from gate.errors import PolicyError
from gate.policy import packs
from gate.policy.load import load_policy
from gate.settings import DEFAULT_POLICY

ROOT = Path(__file__).resolve().parents[2]
POLICIES = ROOT / "policies"


def _setup_patterns() -> tuple[str, ...]:
    """``PATTERNS`` of setup.py, read without running it."""
    for node in ast.parse((ROOT / "setup.py").read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == "PATTERNS" for t in node.targets):
            return tuple(ast.literal_eval(node.value))
    raise AssertionError("setup.py has no PATTERNS")


# What setup.py copies into the wheel (relative to policies/).
SHIPPED = sorted({str(p.relative_to(POLICIES)) for pattern in _setup_patterns()
                  for p in POLICIES.glob(pattern)})


def _fake_installed_package(root: Path, name: str) -> Path:
    """An importable package ``name`` under ``root`` holding a bundled copy, as a wheel has."""
    package = root / name
    package.mkdir()
    (package / "__init__.py").write_text("")
    bundled = package / packs.BUNDLED_NAME
    for relative in SHIPPED:
        (bundled / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(POLICIES / relative, bundled / relative)
    return bundled


@pytest.fixture
def no_source_tree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Pretend ``gate`` is installed away from a checkout: its source-tree path is absent."""
    absent = tmp_path / "site-packages" / "policies"
    monkeypatch.setattr(packs, "SOURCE_DIR", absent)
    return absent


def test_a_checkout_reads_the_top_level_policies_folder() -> None:
    assert packs.source_dir() == POLICIES
    assert packs.packs_dir() == POLICIES
    assert DEFAULT_POLICY == POLICIES / "default.yaml"
    assert not (ROOT / "gate" / packs.BUNDLED_NAME).exists(), "a second copy in the tree"


def test_without_a_source_tree_the_bundled_copy_is_read(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_source_tree: Path) -> None:
    bundled = _fake_installed_package(tmp_path, "bundled_packs_probe")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(packs, "bundled_dir",
                        functools.partial(packs.bundled_dir, "bundled_packs_probe"))

    assert packs.source_dir() is None
    assert packs.packs_dir() == bundled
    assert packs.default_policy_file() == bundled / "default.yaml"
    assert load_policy(packs.default_policy_file()).policy == "default"


def test_the_jurisdiction_packs_are_a_subfolder_of_the_packs(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_source_tree: Path) -> None:
    monkeypatch.setattr(packs, "SOURCE_DIR", POLICIES)
    assert packs.jurisdictions_dir() == POLICIES / "jurisdictions"
    monkeypatch.setattr(packs, "SOURCE_DIR", no_source_tree)
    bundled = _fake_installed_package(tmp_path, "bundled_packs_probe2")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(packs, "bundled_dir",
                        functools.partial(packs.bundled_dir, "bundled_packs_probe2"))
    assert packs.jurisdictions_dir() == bundled / "jurisdictions"


def test_a_stray_policies_folder_without_a_checkout_is_not_the_source_tree(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stray = tmp_path / "site-packages" / "policies"  # e.g. another distribution's folder
    stray.mkdir(parents=True)
    shutil.copyfile(POLICIES / "default.yaml", stray / "default.yaml")
    monkeypatch.setattr(packs, "SOURCE_DIR", stray)
    assert packs.source_dir() is None


def test_no_packs_at_all_is_a_clear_policy_error(
        monkeypatch: pytest.MonkeyPatch, no_source_tree: Path) -> None:
    monkeypatch.setattr(packs, "bundled_dir", lambda: None)
    assert packs.packs_dir() is None
    with pytest.raises(PolicyError) as caught:
        load_policy(packs.default_policy_file())
    message = caught.value.message
    assert str(no_source_tree / "default.yaml") in message
    assert "no default policy is installed" in message
    assert packs.BUNDLED_NAME in message
    assert "GATE_POLICY_FILE" in message


def test_other_unreadable_files_get_no_packs_hint(tmp_path: Path) -> None:
    with pytest.raises(PolicyError) as caught:
        load_policy(tmp_path / "missing.yaml")
    assert "GATE_POLICY_FILE" not in caught.value.message


@pytest.mark.slow
def test_the_build_puts_the_packs_into_the_package(tmp_path: Path) -> None:
    """setup.py's build_py (what a wheel is made of), then an import with no source tree."""
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "setup.py", "MANIFEST.in", "README.md"):
        shutil.copyfile(ROOT / name, source / name)
    skip = shutil.ignore_patterns("__pycache__", "*.pyc", packs.BUNDLED_NAME)
    shutil.copytree(ROOT / "gate", source / "gate", ignore=skip)
    shutil.copytree(POLICIES, source / "policies", ignore=skip)
    lib = tmp_path / "lib"
    # build_py needs no `wheel`; bdist_wheel zips exactly this tree. The age weights come
    # from the verified local copy (the offline path of setup.py), not the network.
    from gate.vision.age import default_age_model

    build_env = {**os.environ, "GATE_AGE_MODEL_FILE": str(default_age_model())}
    subprocess.run([sys.executable, "setup.py", "-q", "build_py", "--build-lib", str(lib)],
                   cwd=source, check=True, capture_output=True, timeout=120, env=build_env)
    assert (lib / "gate" / "_bundled_models" / "age-v1.onnx").is_file()

    bundled = lib / "gate" / packs.BUNDLED_NAME
    built = sorted(str(p.relative_to(bundled)) for p in bundled.rglob("*") if p.is_file())
    assert built == SHIPPED
    for relative in SHIPPED:
        assert (bundled / relative).read_bytes() == (POLICIES / relative).read_bytes()

    probe = ("import gate, gate.settings as s; from gate.policy.load import load_policy; "
             "print(gate.__file__); print(s.DEFAULT_POLICY); "
             "print(load_policy(s.Settings().policy_file).policy)")
    env = {**os.environ, "PYTHONPATH": str(lib)}
    env.pop("GATE_POLICY_FILE", None)
    out = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env=env, check=True,
                         capture_output=True, text=True, timeout=60).stdout.split()
    assert out == [str(lib / "gate" / "__init__.py"), str(bundled / "default.yaml"), "default"]
