"""Retention with an injected clock: idle subjects are erased after ``max_idle_days``,
stale requests, links and sessions expire; the ``gate consent`` commands."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from gate.cli_consent import consent_app
from gate.consent import tables as t
from gate.consent.config import ConsentConfig
from gate.consent.retention import run_retention
from gate.consent.service import ConsentService
from gate.engine import FaceGate
from gate.types import GateRequest, ImageInput, Requester
from tests.conftest import noise_png
from tests.consent.conftest import TEST_CONFIG, link_token

YEAR = timedelta(days=365)


def _count(svc: ConsentService, table: t.Table) -> int:
    with svc.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


def test_idle_subjects_are_erased_after_three_years(fake_gate: FaceGate) -> None:
    start = datetime.now(UTC)
    now = [start]
    svc = ConsentService(fake_gate, ConsentConfig(**TEST_CONFIG), clock=lambda: now[0])
    idle = fake_gate.enroll([noise_png(41)], "Idle").subject_id
    signed_in = fake_gate.enroll([noise_png(42)], "Portal user").subject_id
    checked = fake_gate.enroll([noise_png(43)], "Checked", status="consenting").subject_id
    svc.lifecycle.grant(checked, app_id="studio", operations=["face_swap"])
    fake_gate.check(GateRequest(operation="face_swap", requester=Requester(app_id="studio"),
                                images=[ImageInput(role="target", data=noise_png(43))]))
    now[0] = start + 2 * YEAR  # a portal sign-in two years later is an interaction
    svc.portal.open_link(link_token(svc.portal.link(signed_in)))

    almost = run_retention(svc, start + 3 * YEAR - timedelta(days=1))
    assert almost.erased_subjects == 0
    dry = run_retention(svc, start + 3 * YEAR + timedelta(days=1),
                        dry_run=True)
    assert dry.dry_run and set(dry.subject_ids) == {idle, checked}
    assert len(fake_gate.list_subjects()) == 3
    report = run_retention(svc, start + 3 * YEAR + timedelta(days=1))
    assert set(report.subject_ids) == {idle, checked} and report.erased_subjects == 2
    assert [s.subject_id for s in fake_gate.list_subjects()] == [signed_in]
    assert fake_gate.list_grants() == []
    later = run_retention(svc, start + 5 * YEAR + timedelta(days=1))
    assert later.subject_ids == (signed_in,)
    assert fake_gate.verify_audit().ok
    kinds = [e["event"]["kind"] for e in fake_gate.audit_events(limit=1000)]
    assert kinds.count("erase") == 3 and "retention" in kinds
    svc.close()


def test_custom_idle_limit_and_validation(fake_gate: FaceGate) -> None:
    svc = ConsentService(fake_gate, ConsentConfig(**TEST_CONFIG))
    fake_gate.enroll([noise_png(44)], "Short")
    assert run_retention(svc, datetime.now(UTC) + timedelta(days=31),
                         30).erased_subjects == 1
    with pytest.raises(ValueError):
        run_retention(svc, max_idle_days=0)
    svc.close()


def test_stale_requests_links_and_sessions_expire(fake_gate: FaceGate) -> None:
    start = datetime.now(UTC)
    now = [start]
    svc = ConsentService(fake_gate, ConsentConfig(**TEST_CONFIG), clock=lambda: now[0])
    kept = fake_gate.enroll([noise_png(45)], "Kept").subject_id
    svc.portal.link(kept)  # never used
    svc.portal.open_link(link_token(svc.portal.link(kept)))  # used: a session exists
    request, _ = svc.requests.create("studio", image=noise_png(46), operation="face_swap",
                                    expires_in_s=3600)
    now[0] = start + timedelta(days=2)
    report = run_retention(svc, now[0])
    assert report.erased_subjects == 0
    assert report.expired_requests == 1 and report.deleted_links == 3
    assert report.deleted_sessions == 1
    assert svc.requests.get("studio", request.request_id).state == "expired"
    assert _count(svc, t.consent_links) == 0 and _count(svc, t.consent_sessions) == 0
    svc.close()


def test_erasure_through_any_door_leaves_no_rows_of_ours_at_once(fake_gate: FaceGate) -> None:
    svc = ConsentService(fake_gate, ConsentConfig(**TEST_CONFIG))
    sid = fake_gate.enroll([noise_png(47)], "Gone", status="consenting").subject_id
    svc.lifecycle.grant(sid, app_id="studio", operations=["face_swap"])
    fake_gate.check(GateRequest(operation="face_swap", requester=Requester(app_id="studio"),
                                images=[ImageInput(role="target", data=noise_png(47))]))
    svc.portal.open_link(link_token(svc.portal.link(sid)))
    svc.activity.catch_up()
    assert _count(svc, t.consent_grant_uses) == 1
    fake_gate.erase(sid)  # the SDK door (like DELETE /v1/subjects): no retention run needed
    assert _count(svc, t.consent_sessions) == 0 and _count(svc, t.consent_grant_uses) == 0
    assert svc.revocations("studio", 0).revoked[0]["reason"] == "erased"
    svc.close()


def test_activity_index_is_incremental(svc: ConsentService, fake_gate: FaceGate) -> None:
    fake_gate.enroll([noise_png(48)], "A")
    assert svc.activity.catch_up() == 1
    assert svc.activity.catch_up() == 0
    fake_gate.enroll([noise_png(49)], "B")
    other = ConsentService(fake_gate, svc.config)  # a second process on the same data
    assert other.activity.catch_up() == 1
    assert svc.activity.catch_up() == 0
    other.close()


# -- the CLI sub-app -------------------------------------------------------------------------
@pytest.fixture
def cli_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("GATE_DETECTOR", "fake")
    monkeypatch.setenv("GATE_EMBEDDER", "fake")
    monkeypatch.setenv("GATE_CONSENT_PUBLIC_URL", "https://consent.example")
    return tmp_path / "data"


def test_cli_tokens_portal_webhooks_retention(cli_env: Path) -> None:
    runner = CliRunner()
    d = ["--data-dir", str(cli_env)]
    gate = FaceGate.open(cli_env)
    sid = gate.enroll([noise_png(50)], "Cli", status="consenting").subject_id
    grant_id = gate.grant(sid, app_id="studio", operations=["edit"]).grant_id
    gate.close()

    jwks = json.loads(runner.invoke(consent_app, ["tokens", "jwks", *d]).stdout)
    rotated = json.loads(runner.invoke(consent_app, ["tokens", "rotate", *d]).stdout)
    assert rotated["kids"][1] == jwks["keys"][0]["kid"] and len(rotated["kids"]) == 2
    r = runner.invoke(consent_app, ["tokens", "issue", grant_id, *d])
    assert r.exit_code == 0 and r.stdout.count(".") == 2
    assert runner.invoke(consent_app, ["tokens", "issue", "gr_nope", *d]).exit_code == 3
    r = runner.invoke(consent_app, ["portal", "link", sid, *d])
    assert r.exit_code == 0 and r.stdout.startswith("https://consent.example/portal/#t=")
    r = runner.invoke(consent_app, ["webhooks", "set", "--app", "studio", "--url",
                                    "https://studio.example/hook", *d])
    assert json.loads(r.stdout)["secret"].startswith("whsec_")
    future = (datetime.now(UTC) + 4 * YEAR).isoformat()
    r = runner.invoke(consent_app, ["retention", "run", "--now", future, "--dry-run", *d])
    assert json.loads(r.stdout)["subject_ids"] == [sid]
    r = runner.invoke(consent_app, ["retention", "run", "--now", future, *d])
    assert r.exit_code == 0 and json.loads(r.stdout)["erased_subjects"] == 1
    retired = json.loads(runner.invoke(consent_app, ["tokens", "retire", "--keep", "1",
                                                     *d]).stdout)
    assert retired["dropped"] == [jwks["keys"][0]["kid"]]
