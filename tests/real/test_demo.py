"""`gate demo` tells the README's story on real photos."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from gate.demo import run_demo

pytestmark = pytest.mark.real


def test_demo_scenario() -> None:
    out = io.StringIO()
    verdicts = run_demo(console=Console(file=out, width=120))
    assert verdicts == {
        "protected": "deny",
        "nudify": "deny",
        "consented": "allow",
        "group": "needs_consent",
        "revoked": "needs_consent",
        "erased": "needs_consent",
    }
    text = out.getvalue()
    assert "core.protected_subject" in text and "verified" in text
