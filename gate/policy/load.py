"""Load and validate policy YAML; errors name the file, the line and the field.

YAML is read with a hardened ``SafeLoader``: no Python tags, dates stay strings, duplicate
keys are errors, and alias expansion is bounded (a "billion laughs" document is rejected
before anything is built from it). Every failure is a ``PolicyError`` whose message has
one ``file:line: ...`` line per problem, the earliest first.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Any, TypeVar, get_args

import yaml
from pydantic import BaseModel, RootModel, ValidationError
from pydantic_core import ErrorDetails
from yaml.constructor import ConstructorError
from yaml.scanner import ScannerError

from gate.errors import PolicyError
from gate.policy.model import Policy
from gate.policy.packs import missing_packs_hint

T = TypeVar("T", bound=BaseModel)

MAX_CHARS = 1_000_000  # a policy or table file larger than this is an error
MAX_NODES = 100_000  # YAML nodes after alias expansion
MAX_DEPTH = 64  # nested collections (deep nesting makes PyYAML's scanner quadratic)
MAX_REPORTED = 10  # problems listed in one error message

_TIMESTAMP = "tag:yaml.org,2002:timestamp"
_MERGE = "tag:yaml.org,2002:merge"


def _resolvers_except(tag: str) -> dict[Any, Any]:
    """SafeLoader's implicit resolvers (plain scalar -> tag) without ``tag``."""
    return {first: [(t, rx) for t, rx in resolvers if t != tag]
            for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}


class _Loader(yaml.SafeLoader):
    """``SafeLoader`` that keeps dates as strings and marks bad scalars with their line."""

    yaml_implicit_resolvers = _resolvers_except(_TIMESTAMP)

    def fetch_flow_collection_start(self, TokenClass: Any) -> None:
        self._limit_depth(self.flow_level)
        super().fetch_flow_collection_start(TokenClass)

    def add_indent(self, column: int) -> bool:
        self._limit_depth(len(self.indents))
        return super().add_indent(column)

    def _limit_depth(self, depth: int) -> None:
        if depth >= MAX_DEPTH:
            raise ScannerError(None, None, f"nested more than {MAX_DEPTH} levels deep",
                               self.get_mark())

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep)
        except yaml.YAMLError:
            raise
        except Exception as exc:  # PyYAML's constructors raise anything on a malformed
            # tagged scalar ("!!int", "!!timestamp x", "!!bool maybe"): it is a bad value
            raise ConstructorError(None, None, f"invalid value for tag {node.tag!r}",
                                   node.start_mark) from exc


def load_policy(path: Path) -> Policy:
    """Parse ``path`` into a validated ``Policy`` or raise ``PolicyError``."""
    return parse_policy(read_text(path), str(path))


def parse_policy(text: str, name: str = "<policy>") -> Policy:
    """Parse YAML ``text`` (``name`` is used in messages) or raise ``PolicyError``."""
    data, node = load_yaml(text, name)
    if not isinstance(data, dict):
        raise PolicyError(f"{name}:{node.start_mark.line + 1}: a policy is a mapping with "
                          f"'policy', 'version' and 'rules', not {_kind(data)}")
    return validate_document(Policy, data, node, name)


def read_text(path: Path) -> str:
    try:
        with path.open(encoding="utf-8") as fh:
            text = fh.read(MAX_CHARS + 1)
    except (OSError, UnicodeDecodeError) as exc:
        raise PolicyError(f"{path}: cannot read the file ({type(exc).__name__})"
                          f"{missing_packs_hint(path)}") from exc
    return text


# -- YAML -------------------------------------------------------------------------------
def load_yaml(text: str, name: str) -> tuple[Any, yaml.Node]:
    """Safely load one YAML document; return the data and its node tree (for line numbers)."""
    if len(text) > MAX_CHARS:
        raise PolicyError(f"{name}:1: the file is larger than {MAX_CHARS} characters")
    loader: _Loader | None = None
    try:
        loader = _Loader(text)  # the reader rejects control characters here
        node = loader.get_single_node()
        if node is None:
            raise PolicyError(f"{name}:1: the file is empty")
        _check_tree(node, name)
        return loader.construct_document(node), node
    except yaml.YAMLError as exc:
        raise PolicyError(f"{name}:{_yaml_line(exc, text)}: not valid YAML: "
                          f"{_yaml_problem(exc)}") from exc
    except RecursionError as exc:
        raise PolicyError(f"{name}:1: not valid YAML: nested too deeply") from exc
    finally:
        if loader is not None:
            loader.dispose()


def _yaml_line(exc: yaml.YAMLError, text: str) -> int:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    if mark is not None:
        return int(mark.line) + 1
    position = getattr(exc, "position", None)  # ReaderError: offset of a bad character
    return text.count("\n", 0, position) + 1 if isinstance(position, int) else 1


def _yaml_problem(exc: yaml.YAMLError) -> str:
    if isinstance(exc, yaml.reader.ReaderError):
        return "unacceptable character"
    problem = str(getattr(exc, "problem", None) or type(exc).__name__)[:200]
    context, start = getattr(exc, "context", None), getattr(exc, "context_mark", None)
    end = getattr(exc, "problem_mark", None)
    if context and start is not None and end is not None and start.line != end.line:
        problem += f" ({str(context)[:80]} on line {start.line + 1})"
    return problem


def _check_tree(root: yaml.Node, name: str) -> None:
    """Reject recursive aliases, alias bombs and duplicate keys, before construction."""
    sizes: dict[int, int] = {}

    def size(node: yaml.Node, path: frozenset[int]) -> int:
        if id(node) in sizes:
            return sizes[id(node)]
        if id(node) in path:
            raise PolicyError(f"{name}:{node.start_mark.line + 1}: recursive YAML alias")
        inner = path | {id(node)}
        total = 1
        if isinstance(node, yaml.MappingNode):
            _check_unique_keys(node, name)
            total += sum(size(k, inner) + size(v, inner) for k, v in node.value)
        elif isinstance(node, yaml.SequenceNode):
            total += sum(size(item, inner) for item in node.value)
        if total > MAX_NODES:
            raise PolicyError(f"{name}:{node.start_mark.line + 1}: the document expands to "
                              f"more than {MAX_NODES} YAML nodes (alias bomb?)")
        sizes[id(node)] = total
        return total

    size(root, frozenset())


def _check_unique_keys(node: yaml.MappingNode, name: str) -> None:
    first_line: dict[tuple[str, str], int] = {}
    for key, _ in node.value:
        if not isinstance(key, yaml.ScalarNode) or key.tag == _MERGE:
            continue
        line = key.start_mark.line + 1
        if (key.tag, key.value) in first_line:
            shown = str(key.value)[:80]
            raise PolicyError(f"{name}:{line}: duplicate key {shown!r} (first on line "
                              f"{first_line[key.tag, key.value]})", field=shown)
        first_line[key.tag, key.value] = line


def _kind(data: Any) -> str:
    return {type(None): "empty", list: "a list", str: "a string"}.get(
        type(data), type(data).__name__)


# -- validation -------------------------------------------------------------------------
def validate_document(model: type[T], data: Any, node: yaml.Node, name: str) -> T:
    """Validate ``data`` as ``model``; errors point at the YAML line of the field."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = sorted((_problem(model, err, node) for err in exc.errors()),
                          key=lambda p: p[0])
        lines = [f"{name}:{line}: field '{field}': {msg}"
                 for line, field, msg in problems[:MAX_REPORTED]]
        if len(problems) > MAX_REPORTED:
            lines.append(f"{name}: ... and {len(problems) - MAX_REPORTED} more problems")
        raise PolicyError("\n".join(lines), field=problems[0][1]) from exc


def _problem(model: type[BaseModel], err: ErrorDetails, node: yaml.Node) -> tuple[int, str,
                                                                                    str]:
    ctx = err.get("ctx") or {}
    loc = [*err["loc"], *ctx.get("loc", ())]
    field = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".")
    return _line_of(node, loc), field or "<root>", _message(model, err, loc)


def _message(model: type[BaseModel], err: ErrorDetails, loc: list[Any]) -> str:
    if err["type"] == "extra_forbidden":
        known = _fields_at(model, loc[:-1])
        hint = _did_you_mean(str(loc[-1]), known)
        if not hint and known:
            hint = f" (known fields: {', '.join(known)})"
        return "unknown field" + hint
    msg = err["msg"]
    given = err.get("input")
    if err["type"] == "string_type" and isinstance(given, (bool, int, float)):
        msg += f" (YAML reads {given!r} as a {type(given).__name__}; put it in quotes)"
    if err["type"] == "literal_error" and isinstance(given, str) and len(given) <= 40:
        expected = re.findall(r"'([^']*)'", str((err.get("ctx") or {}).get("expected", "")))
        msg += f" (got {given!r}{_did_you_mean(given, expected, prefix=', ')})"
    return msg


def _did_you_mean(word: str, options: list[str], prefix: str = " (") -> str:
    close = difflib.get_close_matches(word, options, n=1, cutoff=0.6)
    if not close:
        return ""
    return f"{prefix}did you mean {close[0]!r}?" + (")" if prefix == " (" else "")


def _fields_at(model: type[BaseModel], loc: list[Any]) -> list[str]:
    """Field names of the model found at ``loc`` (for "did you mean")."""
    current: type[BaseModel] | None = _model_in(model)
    for part in loc:
        if isinstance(part, int):
            continue
        if current is None or part not in current.model_fields:
            return []
        current = _model_in(current.model_fields[part].annotation)
    return list(current.model_fields) if current is not None else []


def _model_in(tp: Any) -> type[BaseModel] | None:
    if isinstance(tp, type) and issubclass(tp, RootModel):
        return _model_in(tp.model_fields["root"].annotation)
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return tp
    for arg in get_args(tp):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def _line_of(node: yaml.Node, loc: list[Any]) -> int:
    """Best line number for a pydantic error location inside the composed YAML tree."""
    line = int(node.start_mark.line) + 1
    for part in loc:
        child: yaml.Node | None = None
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if isinstance(key, yaml.ScalarNode) and key.value == part:
                    child, line = value, key.start_mark.line + 1
                    break
        elif (isinstance(node, yaml.SequenceNode) and isinstance(part, int)
              and 0 <= part < len(node.value)):
            child = node.value[part]
            line = child.start_mark.line + 1
        if child is None:
            break
        node = child
    return line
