"""Where the policy packs that ship with the gate are (default, creative-app, ...).

The jurisdiction packs are in its ``jurisdictions/`` subfolder (``cn.yaml``, ``eu.yaml``...).

Their one source is the top-level ``policies/`` folder of the repository. A source checkout
or an editable install reads that folder; a wheel carries a copy of it as package data,
``gate/_bundled_policies/`` (made at build time by ``setup.py``), found here through
``importlib.resources``. The source tree wins when both exist.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

#: ``policies/`` of a source checkout: beside the ``gate`` package and ``pyproject.toml``.
SOURCE_DIR = Path(__file__).resolve().parents[2] / "policies"
#: Folder of the copy inside an installed ``gate`` package (written by setup.py).
BUNDLED_NAME = "_bundled_policies"
DEFAULT_NAME = "default.yaml"
JURISDICTIONS_NAME = "jurisdictions"


def source_dir() -> Path | None:
    """The source tree's ``policies/``, or None (an installed wheel has no source tree)."""
    # pyproject.toml guards against an unrelated top-level "policies" in site-packages
    if (SOURCE_DIR / DEFAULT_NAME).is_file() and (SOURCE_DIR.parent / "pyproject.toml").is_file():
        return SOURCE_DIR
    return None


def bundled_dir(package: str = "gate") -> Path | None:
    """The copy inside the installed ``package``, or None (editable installs have none)."""
    found = resources.files(package) / BUNDLED_NAME
    # pip installs wheels unpacked, so this is a Path; a zip-imported package is not served
    if isinstance(found, Path) and (found / DEFAULT_NAME).is_file():
        return found
    return None


def packs_dir() -> Path | None:
    """The folder of the policy packs: the source tree's, else the bundled copy, else None."""
    return source_dir() or bundled_dir()


def jurisdictions_dir() -> Path:
    """``jurisdictions/`` of ``packs_dir()``: the packs ``cn.yaml``, ``eu.yaml``, ..."""
    return (packs_dir() or SOURCE_DIR) / JURISDICTIONS_NAME


def default_policy_file() -> Path:
    """``default.yaml`` of ``packs_dir()``; with no packs, the (missing) source-tree path."""
    return (packs_dir() or SOURCE_DIR) / DEFAULT_NAME


def missing_packs_hint(path: Path) -> str:
    """Why ``path`` cannot be read, if it is the default policy and no packs are installed."""
    if path != SOURCE_DIR / DEFAULT_NAME or packs_dir() is not None:
        return ""
    bundled = resources.files("gate") / BUNDLED_NAME
    return ("; no default policy is installed: neither a source checkout's policies/ nor a "
            f"wheel's copy {bundled}/ exists; set GATE_POLICY_FILE to a policy file, or "
            "reinstall consent-gate")
