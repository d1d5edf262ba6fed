"""consent-gate: a consent-aware face-use gate for generative-AI image apps.

    from gate import FaceGate, GateRequest, ImageInput, Requester
    gate = FaceGate.open("data/")

Heavy parts (models, database) load lazily, so importing this package is cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.2.0"

__all__ = [
    "ConsentNeed",
    "Decision",
    "FaceGate",
    "FaceResult",
    "GateError",
    "GateRequest",
    "Grant",
    "ImageInput",
    "Reason",
    "Requester",
    "Settings",
    "Subject",
]

_LAZY = {
    "FaceGate": "gate.engine",
    "Settings": "gate.settings",
    "GateError": "gate.errors",
    "ConsentNeed": "gate.types",
    "Decision": "gate.types",
    "FaceResult": "gate.types",
    "GateRequest": "gate.types",
    "Grant": "gate.types",
    "ImageInput": "gate.types",
    "Reason": "gate.types",
    "Requester": "gate.types",
    "Subject": "gate.types",
}

if TYPE_CHECKING:
    from gate.engine import FaceGate
    from gate.errors import GateError
    from gate.settings import Settings
    from gate.types import (
        ConsentNeed,
        Decision,
        FaceResult,
        GateRequest,
        Grant,
        ImageInput,
        Reason,
        Requester,
        Subject,
    )


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'gate' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
