"""Property-based fuzzing of the API against its own OpenAPI schema (schemathesis).

Up to 30 generated requests per operation, sent with a key holding every scope: no 5xx,
and every response (errors included) conforms to the documented schema, status codes,
content types and headers. Skipped when schemathesis is not installed. The operations
are read from the committed snapshot, so a new route is fuzzed as soon as it is in it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

schemathesis = pytest.importorskip("schemathesis")

from hypothesis import HealthCheck, given, settings  # noqa: E402

from gate.api.keys import KeyStore  # noqa: E402
from gate.db import make_engine  # noqa: E402
from tests.api.conftest import bearer, make_client  # noqa: E402

MAX_EXAMPLES = 30
_SNAPSHOT = json.loads(Path(__file__).with_name("openapi.json").read_text(encoding="utf-8"))
OPERATIONS = [(method.upper(), path) for path, item in _SNAPSHOT["paths"].items()
              for method in item]


@pytest.fixture(scope="module")
def fuzz_target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, str]]:
    from gate.engine import FaceGate

    gate = FaceGate.open(tmp_path_factory.mktemp("fuzz") / "data", detector="fake",
                         embedder="fake", match_threshold=0.9)
    store = KeyStore(make_engine(gate.settings.resolved_database_url()))
    token = store.create("fuzz", ["check", "admin"]).token
    client = make_client(gate)
    with client:  # runs the lifespan: the app's services stay set for schemathesis' calls
        yield schemathesis.openapi.from_asgi("/openapi.json", client.app), token
    store.close()
    gate.close()


@pytest.mark.slow
@pytest.mark.parametrize(("method", "path"), OPERATIONS)
def test_operation_conforms_to_its_schema(method: str, path: str,
                                          fuzz_target: tuple[Any, str]) -> None:
    from schemathesis.specs.openapi.checks import positive_data_acceptance

    api_schema, token = fuzz_target
    operation = api_schema[path][method]

    @given(case=operation.as_strategy())
    @settings(max_examples=MAX_EXAMPLES, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    def fuzz(case: Any) -> None:
        # Schema-valid bodies are mostly semantically invalid (random bytes are no image,
        # random ids name nothing), so a 4xx for them is right: that check is left out.
        case.call_and_validate(headers=bearer(token),
                               excluded_checks=[positive_data_acceptance])

    fuzz()
