"""The published OpenAPI schema equals the committed snapshot ``tests/api/openapi.json``.

An intended API change: regenerate the snapshot and review the diff:

    GATE_UPDATE_OPENAPI=1 .venv/bin/pytest tests/api/test_openapi.py
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from gate.api.app import create_app
from gate.api.settings import ApiSettings

SNAPSHOT = Path(__file__).with_name("openapi.json")


def current_schema() -> str:
    app = create_app(gate=None, api_settings=ApiSettings())
    return json.dumps(app.openapi(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def test_openapi_matches_the_snapshot() -> None:
    schema = current_schema()
    if os.environ.get("GATE_UPDATE_OPENAPI") == "1":
        SNAPSHOT.write_text(schema, encoding="utf-8")
    assert SNAPSHOT.read_text(encoding="utf-8") == schema, (
        "the API changed; if intended, run GATE_UPDATE_OPENAPI=1 "
        ".venv/bin/pytest tests/api/test_openapi.py and commit tests/api/openapi.json")


def test_schema_documents_both_body_media_types() -> None:
    schema = json.loads(current_schema())
    body = schema["paths"]["/v1/check"]["post"]["requestBody"]["content"]
    assert set(body) == {"application/json", "multipart/form-data"}
    components = schema["components"]["schemas"]
    for name in ("CheckBody", "CheckForm", "CheckOutputBody", "EnrollBody", "ErrorResponse",
                 "Decision", "Grant", "Subject"):
        assert name in components, name
    assert "app_id" not in components["CheckBody"]["properties"]
    assert components["CheckBody"]["additionalProperties"] is False
