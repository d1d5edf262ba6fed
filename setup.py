"""Build hook: a wheel carries the policy packs of the top-level ``policies/`` folder.

``policies/`` stays where it is and stays the one source of the packs. Building a wheel
copies its ``*.yaml``, ``schema.json`` and ``tests/*.yaml`` into the ``gate`` package as
``gate/_bundled_policies/``, where ``gate.policy.packs`` finds them when there is no
source tree. Editable installs read ``policies/`` itself, so nothing is copied for them.
Everything else about the build is declared in ``pyproject.toml``.
"""

from __future__ import annotations

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
POLICIES = ROOT / "policies"
PATTERNS = ("*.yaml", "schema.json", "tests/*.yaml")
BUNDLED = Path("gate", "_bundled_policies")  # keep in step with gate/policy/packs.py


class BuildPyWithPolicies(build_py):
    """``build_py`` that also copies the policy packs into the built ``gate`` package."""

    def run(self) -> None:
        super().run()
        for source, target in self._policy_files():
            self.mkpath(str(target.parent))
            self.copy_file(str(source), str(target))

    def get_outputs(self, include_bytecode: bool = True) -> list[str]:
        extra = [str(target) for _, target in self._policy_files()]
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


setup(cmdclass={"build_py": BuildPyWithPolicies})
