"""JSON Schema for policy files, generated from the pydantic model.

``policies/schema.json`` is this output, committed so that editors can validate policy
YAML (``# yaml-language-server: $schema=./schema.json``); a test keeps it from drifting.
Regenerate with ``gate policy schema --output policies/schema.json``. Jurisdiction packs
(``policies/jurisdictions/``) use the same schema (``$schema=../schema.json``). Checks not
expressible in JSON Schema live only in the loader: unique ids, ``face_count.min <=
face_count.max``, a pack's ids starting with its code, every pack item citing a source,
cited sources existing, and label obligations having their ``labels`` parameters.
"""

from __future__ import annotations

import json
from typing import Any

from gate.policy.model import Policy

DIALECT = "https://json-schema.org/draft/2020-12/schema"


def policy_json_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a policy document."""
    schema = Policy.model_json_schema()
    return {"$schema": DIALECT,
            "$comment": "generated from gate/policy/model.py by `gate policy schema`; "
                        "do not edit",
            **schema}


def render_policy_json_schema() -> str:
    """The schema as the exact text of ``policies/schema.json``."""
    return json.dumps(policy_json_schema(), indent=2, ensure_ascii=False) + "\n"
