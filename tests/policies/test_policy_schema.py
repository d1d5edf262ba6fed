"""policies/schema.json is generated from the model and every policy file satisfies it."""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from gate.policy.load import load_yaml
from gate.policy.model import FACE_CONDITIONS, Policy, When
from gate.policy.schema import policy_json_schema, render_policy_json_schema

POLICIES = Path(__file__).resolve().parents[2] / "policies"
POLICY_FILES = sorted(POLICIES.glob("*.yaml"))


def _jsonschema() -> Any:
    """The optional ``jsonschema`` package, or None (it is not a dependency)."""
    try:
        return importlib.import_module("jsonschema")
    except ImportError:
        return None


def _validate(data: Any) -> None:
    """Validate with jsonschema when it is installed, else with the pydantic model."""
    jsonschema = _jsonschema()
    if jsonschema is None:
        Policy.model_validate(data)
    else:
        jsonschema.validate(data, json.loads((POLICIES / "schema.json").read_text()))


def _invalid() -> tuple[type[Exception], ...]:
    jsonschema = _jsonschema()
    return (ValidationError,) if jsonschema is None else (ValidationError,
                                                            jsonschema.ValidationError)


def test_committed_schema_is_the_generated_one() -> None:
    committed = (POLICIES / "schema.json").read_text(encoding="utf-8")
    assert committed == render_policy_json_schema(), (
        "policies/schema.json is stale: run `gate policy schema --output policies/schema.json`")


def test_there_are_policy_packs() -> None:
    names = {p.name for p in POLICY_FILES}
    assert {"default.yaml", "creative-app.yaml", "self-portrait-only.yaml"} <= names


@pytest.mark.parametrize("path", POLICY_FILES, ids=lambda p: p.name)
def test_policy_file_satisfies_the_schema(path: Path) -> None:
    data, _ = load_yaml(path.read_text(encoding="utf-8"), str(path))
    _validate(data)


@pytest.mark.parametrize("path", POLICY_FILES, ids=lambda p: p.name)
def test_policy_file_points_editors_at_the_schema(path: Path) -> None:
    first = path.read_text(encoding="utf-8").splitlines()[0]
    assert first == "# yaml-language-server: $schema=./schema.json"


def test_schema_describes_every_condition() -> None:
    schema = policy_json_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    when = schema["$defs"]["When"]
    assert set(when["properties"]) == set(When.model_fields)
    assert when["additionalProperties"] is False
    for name in When.model_fields:
        assert when["properties"][name]["description"], name


def test_schema_forbids_face_conditions_in_request_rules() -> None:
    rule = policy_json_schema()["$defs"]["Rule"]
    request_scope = rule["allOf"][0]
    assert request_scope["if"]["properties"]["scope"] == {"const": "request"}
    forbidden = request_scope["then"]["properties"]["when"]["properties"]
    assert set(forbidden) == set(FACE_CONDITIONS)
    assert all(v == {"type": "null"} for v in forbidden.values())


def test_schema_rejects_what_the_model_rejects() -> None:
    bad_rules: list[dict[str, Any]] = [
        {"id": "a.b", "effect": "deny", "message": "m", "scope": "request",
         "when": {"identity": ["self"]}},
        {"id": "a.b", "effect": "deny", "message": "m", "obligations": ["label_ai_content"]},
        {"id": "a.b", "effect": "alow", "message": "m"},
        {"id": "a.b", "effect": "deny", "message": "m", "when": {"operation": []}},
        {"id": "a.b", "effect": "deny", "message": "m", "when": {"identiy": ["self"]}},
        {"id": "core.b", "effect": "deny", "message": "m"},
        {"id": "default.no_matching_rule", "effect": "deny", "message": "m"},
    ]
    for rule in bad_rules:
        with pytest.raises(_invalid()):
            _validate({"policy": "p", "version": "1", "rules": [rule]})


PACK_FILES = sorted((POLICIES / "jurisdictions").glob("*.yaml"))


def test_there_are_jurisdiction_packs() -> None:
    codes = ["cn", "eu", "us-il", "us-tx", "us-wa", "us"]
    assert sorted(p.stem for p in PACK_FILES) == sorted(codes)


@pytest.mark.parametrize("path", PACK_FILES, ids=lambda p: p.name)
def test_pack_file_satisfies_the_schema_and_points_editors_at_it(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    assert text.splitlines()[0] == "# yaml-language-server: $schema=../schema.json"
    data, _ = load_yaml(text, str(path))
    _validate(data)


PACK = {"policy": "p", "version": "1", "jurisdiction": {"code": "us", "name": "US"},
        "sources": {"s.a": {"title": "T", "article": "A", "url": "https://example.org/",
                            "verified": "unconfirmed"}}}


def test_schema_needs_rules_in_a_base_policy_but_not_in_a_pack() -> None:
    _validate(PACK)
    for bad in ({"policy": "p", "version": "1"}, {"policy": "p", "version": "1", "rules": []}):
        with pytest.raises(_invalid()):
            _validate(bad)


def test_schema_rejects_bad_pack_sections() -> None:
    cited = {"message": "m", "sources": ["s.a"]}
    bad_sections: list[dict[str, Any]] = [
        {"jurisdiction": {"code": "fr", "name": "F"}},
        {"formalities": [{"id": "us.f", "formality": "handshake", **cited}]},
        {"labels": {"visible": {"id": "us.v", "text": {"en": "AI"}, "positions": [],
                                "min_text_height_ratio": 0.05, **cited}}},
        {"labels": {"visible": {"id": "us.v", "text": {"en": "AI", "zh": "AI"},
                                "positions": ["middle"], "min_text_height_ratio": 0.05,
                                **cited}}},
        {"labels": {"visible": {"id": "us.v", "text": {"en": "AI", "zh": "AI"},
                                "positions": ["top"], "min_text_height_ratio": 0.9, **cited}}},
        {"labels": {"metadata": {"id": "us.m", "scheme": "c2pa", "fields": ["Label"],
                                 "xmp_namespace": "https://x.org/", **cited}}},
        {"labels": {"machine_readable": {"id": "us.mr", "digital_source_type": "x",
                                         "carriers": ["xmp"], **cited}}},
        {"retention": [{"id": "us.r", "days": -1, "since": "last_interaction", **cited}]},
        {"retention": [{"id": "us.r", "days": 3, "since": "creation", **cited}]},
        {"takedown": [{"id": "us.t", "hours": 0, "scope": "s", **cited}]},
        {"sources": {"s.a": {"title": "T", "article": "A", "url": "ftp://x",
                             "verified": "unconfirmed"}}},
        {"sources": {"s.a": {"title": "T", "article": "A", "url": "https://x.org/",
                             "verified": "trust me"}}},
    ]
    for section in bad_sections:
        with pytest.raises(_invalid()):
            _validate({**PACK, **section})
