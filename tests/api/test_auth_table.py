"""Walks every operation in the OpenAPI schema: none but the public ones answers without
a key, with a bad key, or with a key lacking its scope."""

from __future__ import annotations

import re
from typing import Any

from gate.api.app import create_app
from gate.api.settings import ApiSettings
from tests.api.conftest import Keys, bearer

#: Reachable without a key (documented in docs/scaling.md and the OpenAPI description).
PUBLIC = {("GET", "/healthz"), ("GET", "/readyz"), ("GET", "/metrics"),
          ("GET", "/openapi.json"), ("GET", "/docs"), ("GET", "/redoc"),
          ("GET", "/docs/oauth2-redirect"), ("GET", "/.well-known/jwks.json")}
#: The subject portal authenticates people with one-time links and a session cookie, not
#: with API keys (tests/consent/test_http.py and test_portal_browser.py cover it).
PORTAL_PREFIX = "/portal"
#: The scope each protected operation needs.
SCOPE = {"/v1/check": "check", "/v1/check-output": "check",
         "/v1/consent-requests": "check", "/v1/consent-requests/{request_id}": "check",
         "/v1/revocations": "check", "/v1/grants/{grant_id}/token": "check",
         "/v1/self-enrolments": "check", "/v1/self-enrolments/{enrolment_id}": "check",
         "/v1/label-output": "check"}
#: Operations that admit either an app's key (scope check) or an operator's (admin).
EITHER = {("POST", "/v1/reports")}


def operations(schema: dict[str, Any]) -> list[tuple[str, str]]:
    return [(method.upper(), path) for path, item in schema["paths"].items()
            for method in item if method in {"get", "post", "put", "patch", "delete"}]


def concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "x1", path)


def test_every_route_is_in_the_schema_or_public() -> None:
    app = create_app(gate=None, api_settings=ApiSettings())
    schema = app.openapi()
    documented = set(operations(schema))
    for route in app.routes:
        for method in getattr(route, "methods", set()) - {"HEAD"}:
            key = (method, route.path)  # type: ignore[attr-defined]
            assert key in documented or key in PUBLIC or \
                route.path.startswith(PORTAL_PREFIX), key  # type: ignore[attr-defined]


def test_no_protected_operation_without_the_right_key(client: Any, keys: Keys) -> None:
    schema = client.get("/openapi.json").json()
    protected = [op for op in operations(schema) if op not in PUBLIC]
    assert len(protected) >= 11
    for method, path in protected:
        needed = SCOPE.get(path, "admin")
        wrong = keys.admin if needed == "check" else keys.studio
        url = concrete(path)
        cases: list[tuple[dict[str, str] | None, int]] = [
            (None, 401), (bearer("gk_0_bad"), 401), (bearer(keys.revoked), 401)]
        if (method, path) not in EITHER:
            cases.append((bearer(wrong), 403))
        for headers, status in cases:
            r = client.request(method, url, headers=headers, json={})
            assert r.status_code == status, (method, path, headers, r.text)
        security = schema["paths"][path][method.lower()].get("security")
        assert security == [{"ApiKey": []}], (method, path)


def test_public_routes_need_no_key(client: Any) -> None:
    for method, path in sorted(PUBLIC - {("GET", "/docs/oauth2-redirect")}):
        assert client.request(method, path).status_code == 200, path


def test_metrics_can_require_an_admin_key(fake_gate: Any, keys: Keys) -> None:
    from tests.api.conftest import make_client

    with make_client(fake_gate, metrics_auth="admin") as c:
        assert c.get("/metrics").status_code == 401
        assert c.get("/metrics", headers=bearer(keys.studio)).status_code == 403
        assert c.get("/metrics", headers=bearer(keys.admin)).status_code == 200
