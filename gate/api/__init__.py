"""The HTTP sidecar: ``create_app(settings, gate=None)`` (FastAPI), run by ``gate serve``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["create_app"]

if TYPE_CHECKING:
    from gate.api.app import create_app


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from gate.api.app import create_app

        return create_app
    raise AttributeError(f"module 'gate.api' has no attribute {name!r}")
