"""Load and validate policy YAML; errors name the file, the line and the field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from gate.errors import PolicyError
from gate.policy.model import Policy


def load_policy(path: Path) -> Policy:
    """Parse ``path`` into a validated ``Policy`` or raise ``PolicyError``."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PolicyError(f"{path}: cannot read policy file ({type(exc).__name__})") from exc
    return parse_policy(text, str(path))


def parse_policy(text: str, name: str = "<policy>") -> Policy:
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        raise PolicyError(f"{name}{line}: not valid YAML") from exc
    if not isinstance(data, dict):
        raise PolicyError(f"{name}:1: a policy is a mapping with 'policy', 'version', 'rules'")
    try:
        return Policy.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = [p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-"))]
        field = ".".join(str(p) for p in loc) or "<root>"
        line = _line_of(node, loc)
        raise PolicyError(f"{name}:{line}: field '{field}': {err['msg']}", field=field) from exc


def _line_of(node: Any, loc: list[Any]) -> int:
    """Best line number for a pydantic error location inside the composed YAML tree."""
    line = (node.start_mark.line + 1) if node is not None else 1
    for part in loc:
        child = None
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if key.value == part:
                    child = key if value is None else value
                    line = key.start_mark.line + 1
                    break
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            if 0 <= part < len(node.value):
                child = node.value[part]
                line = child.start_mark.line + 1
        if child is None:
            break
        node = child
    return line
