"""Every error status answers ``{"error": {"code", "message", "request_id"}}``."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from gate.api.errors import STATUS_BY_CODE, status_for
from gate.errors import GateError, ImageTooLarge, NotFound, StorageError
from tests.api.conftest import Keys, bearer, make_client


def assert_error(r: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "request_id"}
    assert body["error"]["code"] == code
    assert body["error"]["request_id"] == r.headers["x-request-id"]
    return body["error"]  # type: ignore[no-any-return]


def test_framework_errors_share_the_shape(client: Any, keys: Keys) -> None:
    assert_error(client.get("/v1/nothing-here"), 404, "not_found")
    assert_error(client.put("/healthz"), 405, "method_not_allowed")
    assert_error(client.post("/v1/check", content=b"{nope", headers={
        **bearer(keys.studio), "content-type": "application/json"}), 400, "malformed_json")
    assert_error(client.post("/v1/grants", content=b"{nope", headers={
        **bearer(keys.admin), "content-type": "application/json"}), 400, "malformed_json")
    assert_error(client.post("/v1/check", content=b"x", headers={
        **bearer(keys.studio), "content-type": "text/plain"}), 415, "unsupported_media_type")
    e = assert_error(client.post("/v1/grants", headers=bearer(keys.admin), json={
        "subject_id": "s", "app_id": "a", "operations": ["img2img"], "colour": "red"}),
        422, "invalid_request")
    assert "colour" in e["message"]


def test_auth_errors(client: Any, keys: Keys) -> None:
    r = client.post("/v1/check", json={"operation": "txt2img"})
    assert_error(r, 401, "unauthorized")
    assert r.headers["www-authenticate"] == "Bearer"
    assert_error(client.post("/v1/check", headers=bearer("gk_nonsense"),
                             json={"operation": "txt2img"}), 401, "unauthorized")
    assert_error(client.post("/v1/check", headers=bearer(keys.revoked),
                             json={"operation": "txt2img"}), 401, "unauthorized")
    tampered = keys.studio[:-1] + ("A" if keys.studio[-1] != "A" else "B")
    assert_error(client.post("/v1/check", headers=bearer(tampered),
                             json={"operation": "txt2img"}), 401, "unauthorized")
    assert_error(client.get("/v1/grants", headers=bearer(keys.studio)), 403, "forbidden")
    assert_error(client.post("/v1/check", headers=bearer(keys.admin),
                             json={"operation": "txt2img"}), 403, "forbidden")


def test_request_id_is_taken_from_the_header(client: Any, keys: Keys) -> None:
    r = client.post("/v1/check", json={"operation": "txt2img"},
                    headers={**bearer(keys.studio), "X-Request-ID": "trace-42"})
    assert r.headers["x-request-id"] == "trace-42"
    assert r.json()["request_id"] == "trace-42"
    r = client.get("/nope", headers={"X-Request-ID": "bad id with spaces"})
    assert r.json()["error"]["request_id"].startswith("req_")


def test_body_too_large_by_content_length(fake_gate: Any, keys: Keys) -> None:
    with make_client(fake_gate, max_body_bytes=2048) as c:
        r = c.post("/v1/check", headers=bearer(keys.studio), content=b"x" * 4096)
        assert_error(r, 413, "body_too_large")


def test_body_too_large_while_streaming(fake_gate: Any, keys: Keys) -> None:
    sent: list[int] = []

    def chunks() -> Any:  # no Content-Length: chunked, counted as it arrives
        for _ in range(100):
            sent.append(1)
            yield b"y" * 1024

    with make_client(fake_gate, max_body_bytes=2048) as c:
        r = c.post("/v1/check", content=chunks(), headers={
            **bearer(keys.studio), "content-type": "application/json"})
        assert_error(r, 413, "body_too_large")
    for route, token in (("/v1/grants", keys.admin), ("/v1/subjects", keys.admin)):
        with make_client(fake_gate, max_body_bytes=2048) as c:
            r = c.post(route, content=chunks(), headers={
                **bearer(token), "content-type": "application/json"})
            assert_error(r, 413, "body_too_large")


def test_rate_limit_answers_429_with_retry_after(fake_gate: Any, keys: Keys) -> None:
    with make_client(fake_gate, rate_limit_per_s=0.5, rate_limit_burst=2) as c:
        for _ in range(2):
            assert c.get("/v1/grants", headers=bearer(keys.admin)).status_code == 200
        r = c.get("/v1/grants", headers=bearer(keys.admin))
        assert_error(r, 429, "rate_limited")
        assert int(r.headers["retry-after"]) >= 1
        # buckets are per key: another key is not limited
        assert c.post("/v1/check", headers=bearer(keys.studio),
                      json={"operation": "txt2img"}).status_code == 200


def test_not_ready_is_503(client: Any, fake_gate: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    def down() -> None:
        raise StorageError("the consent database is unavailable")

    monkeypatch.setattr(fake_gate.parts.store, "ping", down)
    e = assert_error(client.get("/readyz"), 503, "not_ready")
    assert "database" in e["message"]


def test_storage_failure_is_503(client: Any, keys: Keys, fake_gate: Any,
                                monkeypatch: pytest.MonkeyPatch) -> None:
    def down(*_: Any) -> None:
        raise StorageError("the consent database is unavailable")

    monkeypatch.setattr(fake_gate.parts.store, "list_grants", down)
    assert_error(client.get("/v1/grants", headers=bearer(keys.admin)), 503,
                 "storage_unavailable")


def test_unexpected_exception_is_500_without_details(client: Any, keys: Keys,
                                                     fake_gate: Any,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*_: Any) -> None:
        raise RuntimeError("secret internals")

    monkeypatch.setattr(fake_gate.parts.store, "list_grants", boom)
    r = client.get("/v1/grants", headers=bearer(keys.admin))
    assert r.status_code == 500
    assert r.json()["error"]["code"] == "internal_error"
    assert "secret" not in r.text


def test_status_mapping_follows_the_code_hierarchy() -> None:
    assert status_for(NotFound("x")) == 404
    assert status_for(ImageTooLarge("x")) == 413

    class NewKindOfNotFound(NotFound):
        code = "brand_new"

    assert status_for(NewKindOfNotFound("x")) == 404
    assert status_for(GateError("x")) == 500
    assert all(400 <= s < 600 for s in STATUS_BY_CODE.values())
