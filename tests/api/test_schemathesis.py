"""Property-based fuzzing of the API against its own OpenAPI schema (schemathesis).

Up to 30 generated requests per operation, sent with a key holding every scope: no 5xx,
and every response (errors included) conforms to the documented schema, status codes,
content types and headers. Skipped when schemathesis is not installed.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

schemathesis = pytest.importorskip("schemathesis")

from hypothesis import HealthCheck, settings  # noqa: E402

from gate.api.keys import KeyStore  # noqa: E402
from gate.db import make_engine  # noqa: E402
from tests.api.conftest import bearer, make_client  # noqa: E402

MAX_EXAMPLES = 30


@pytest.fixture(scope="module")
def fuzz_target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, str]]:
    from gate.engine import FaceGate

    gate = FaceGate.open(tmp_path_factory.mktemp("fuzz") / "data", detector="fake",
                         embedder="fake", match_threshold=0.9)
    store = KeyStore(make_engine(gate.settings.resolved_database_url()))
    token = store.create("fuzz", ["check", "admin"]).token
    client = make_client(gate)
    with client:  # runs the lifespan: the app's services stay set for schemathesis' calls
        yield client.app, token
    store.close()
    gate.close()


@pytest.fixture(scope="module")
def api_schema(fuzz_target: tuple[Any, str]) -> Any:
    app, _ = fuzz_target
    return schemathesis.openapi.from_asgi("/openapi.json", app)


schema = schemathesis.pytest.from_fixture("api_schema")


@pytest.mark.slow
@schema.parametrize()
@settings(max_examples=MAX_EXAMPLES, deadline=None,
          suppress_health_check=list(HealthCheck))
def test_api_conforms_to_its_schema(case: Any, fuzz_target: tuple[Any, str]) -> None:
    _, token = fuzz_target
    from schemathesis.specs.openapi.checks import positive_data_acceptance

    # Schema-valid bodies are often semantically invalid (random bytes are no image,
    # random ids name nothing), so a 4xx for them is right: that check is left out.
    case.call_and_validate(headers=bearer(token), excluded_checks=[positive_data_acceptance])
