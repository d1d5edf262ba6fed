"""Every test a document cites as evidence (``tests/x.py::test_name``) exists."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCS = sorted([REPO / "README.md", *(REPO / "docs").glob("*.md")])
REF = re.compile(r"(tests/[\w/]+\.py)(?:::(\w+))?")


def _refs() -> list[tuple[str, str, str | None]]:
    found = []
    for doc in DOCS:
        for path, name in REF.findall(doc.read_text(encoding="utf-8")):
            found.append((doc.name, path, name or None))
    return found


@pytest.mark.parametrize(("doc", "path", "name"), _refs())
def test_cited_test_exists(doc: str, path: str, name: str | None) -> None:
    target = REPO / path
    assert target.is_file(), f"{doc} cites {path}, which does not exist"
    if name:  # names may be cut short with an ellipsis in tables: match the prefix
        assert re.search(rf"^def {re.escape(name)}", target.read_text(encoding="utf-8"),
                         re.MULTILINE), f"{doc} cites {path}::{name}, which does not exist"
