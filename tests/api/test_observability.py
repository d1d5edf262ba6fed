"""Metrics count verdicts and rules without identities; logs are JSON without secrets."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest

from gate.api.logging import JsonFormatter, request_id_var
from tests.api.conftest import Keys, b64, bearer
from tests.conftest import noise_png


def test_metrics_count_verdicts_and_rules_but_no_identities(client: Any, keys: Keys) -> None:
    sid = client.post("/v1/subjects", headers=bearer(keys.admin), json={
        "images_b64": [b64(noise_png(1))], "display_name": "Ada Lovelace"}).json()["subject_id"]
    for _ in range(2):
        client.post("/v1/check", headers=bearer(keys.studio), json={
            "operation": "face_swap", "user_id": "user-77",
            "images": [{"role": "target", "data_b64": b64(noise_png(1))}]})
    client.get("/readyz")
    text = client.get("/metrics").text
    assert 'gate_decisions_total{endpoint="check",verdict="deny"} 2.0' in text
    assert 'gate_decision_rules_total{rule_id="core.protected_subject",verdict="deny"} 2.0' \
        in text
    assert 'gate_stage_latency_seconds_count{stage="total"} 2.0' in text
    assert 'gate_stage_latency_seconds_count{stage="detect"}' in text
    assert 'gate_ready_check{check="database"} 1.0' in text
    assert "gate_models_loaded 1.0" in text
    assert 'route="/v1/check"' in text
    for secret in (sid, "Ada", "user-77", "studio", keys.studio):
        assert secret not in text


def test_formatter_keeps_only_safe_fields() -> None:
    record = logging.LogRecord("gate", logging.INFO, __file__, 1, "check done", None, None)
    record.__dict__.update(verdict="deny", image=b"\xff\xd8", embedding=[0.1], api_key="gk_x",
                           display_name="Ada", app_id="studio")
    token = request_id_var.set("req_1")
    try:
        line = json.loads(JsonFormatter().format(record))
    finally:
        request_id_var.reset(token)
    assert line["verdict"] == "deny" and line["request_id"] == "req_1"
    assert line["app_id"] == "studio"
    for unsafe in ("image", "embedding", "api_key", "display_name"):
        assert unsafe not in line


def test_request_logs_hold_no_images_keys_or_names(client: Any, keys: Keys,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    image = b64(noise_png(9))
    with caplog.at_level(logging.DEBUG):
        client.post("/v1/subjects", headers=bearer(keys.admin), json={
            "images_b64": [image], "display_name": "Grace Hopper"})
        client.post("/v1/check", headers=bearer(keys.studio), json={
            "operation": "nudify", "prompt": "Grace Hopper",
            "images": [{"role": "target", "data_b64": image}]})
    lines = [JsonFormatter().format(r) for r in caplog.records]
    text = "\n".join(lines)
    assert '"route": "/v1/check"' in text and '"status": 200' in text
    for secret in (image[:40], "Grace", keys.studio, keys.admin):
        assert secret not in text
