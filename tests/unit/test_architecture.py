"""The rules of docs/architecture.md that code can check."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

GATE = Path(__file__).resolve().parents[2] / "gate"
WEB = {"fastapi", "starlette", "uvicorn"}


def _modules() -> list[Path]:
    return sorted(p for p in GATE.rglob("*.py") if "migrations" not in p.parts)


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def _part(path: Path) -> str:
    return path.relative_to(GATE).parts[0]


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(GATE)))
def test_core_code_never_imports_the_web_framework(path: Path) -> None:
    if _part(path) in ("api", "proxy"):
        return
    web = {m for m in _imports(path) if m.split(".")[0] in WEB}
    assert not web, f"{path.relative_to(GATE)} imports {sorted(web)}: only gate.api and " \
                    "gate.proxy may"


@pytest.mark.parametrize("path", sorted([*(GATE / "consent").glob("*.py"),
                                         *(GATE / "incident").glob("*.py"),
                                         *(GATE / "marking").glob("*.py")]),
                         ids=lambda p: str(p.relative_to(GATE)))
def test_consent_incident_and_marking_never_import_the_engine(path: Path) -> None:
    bad = {m for m in _imports(path) if m == "gate.engine" or m.startswith("gate.engine.")}
    assert not bad, f"gate/{path.relative_to(GATE)} imports gate.engine; use the Protocols"


def test_tables_are_made_only_by_migrations() -> None:
    offenders = [str(p.relative_to(GATE)) for p in _modules()
                 if "create_all(" in p.read_text(encoding="utf-8")]
    assert offenders == [], f"create_all outside the migrations: {offenders}"


def test_one_utc_helper_and_one_atomic_write_helper() -> None:
    """``datetime.now(UTC)`` lives in gate/clock.py, ``mkstemp`` in gate/durable.py."""
    for needle, home in (("datetime.now(UTC)", "clock.py"), ("mkstemp(", "durable.py")):
        found = [str(p.relative_to(GATE)) for p in _modules()
                 if needle in p.read_text(encoding="utf-8") and p.name != home]
        assert found == [], f"{needle} outside gate/{home}: {found}"
