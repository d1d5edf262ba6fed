"""Jurisdiction packs in real decisions (issue 18): the deployment's packs, an app's own,
consent formalities recorded with grants, and what a decision says about them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gate.engine import FaceGate
from gate.errors import PolicyError
from gate.types import ConsentRecord, GateRequest, ImageInput, Requester
from tests.conftest import noise_png

BOB = noise_png(71)
STUDIO = Requester(app_id="studio", user_id="u1")


def _gate(tmp_path: Path, jurisdictions: str) -> FaceGate:
    return FaceGate.open(tmp_path, detector="fake", embedder="fake",
                         jurisdictions=jurisdictions)


def _swap(data: bytes = BOB, **extra: Any) -> GateRequest:
    return GateRequest.model_validate({
        "operation": "face_swap", "requester": STUDIO,
        "images": [ImageInput(role="target", data=data)], **extra})


def test_cn_allowed_face_swap_lists_the_pack_and_its_label_obligations(tmp_path: Path) -> None:
    with _gate(tmp_path, "cn") as gate:
        bob = gate.enroll([BOB], display_name="Bob", status="consenting")
        gate.grant(bob.subject_id, app_id="studio", operations=["face_swap"],
                   consent=ConsentRecord(formalities=["separate_consent", "explicit_consent"],
                                         collected_by="portal"))
        d = gate.check(_swap())
        assert d.verdict == "allow", d.reasons
        assert d.jurisdictions == ["cn"]
        assert {"label_visible", "label_gb45438_metadata"} <= set(d.obligations)
        assert "+cn@" in d.policy_version


def test_cn_a_grant_without_separate_consent_is_not_consent_there(tmp_path: Path) -> None:
    with _gate(tmp_path, "cn") as gate:
        bob = gate.enroll([BOB], display_name="Bob", status="consenting")
        gate.grant(bob.subject_id, app_id="studio", operations=["face_swap"])
        d = gate.check(_swap())
        assert d.verdict == "needs_consent"
        assert d.faces[0].identity == "protected" and d.faces[0].grant_id is None
        assert "cn.formality.separate_consent" in d.rule_ids
        assert "separate_consent" in d.consent_needed[0].formalities


def test_us_il_a_grant_without_a_written_release_does_not_make_the_face_consented(
        tmp_path: Path) -> None:
    with _gate(tmp_path, "us-il") as gate:
        bob = gate.enroll([BOB], display_name="Bob", status="consenting")
        gate.grant(bob.subject_id, app_id="studio", operations=["face_swap"],
                   consent=ConsentRecord(formalities=["explicit_consent"]))
        d = gate.check(_swap())
        assert d.faces[0].identity != "consented" and d.verdict == "needs_consent"
        assert "us-il.formality.written_release" in d.rule_ids
        assert d.jurisdictions == ["us-il", "us"]  # a state pack brings the federal one
        signed = gate.grant(bob.subject_id, app_id="studio", operations=["face_swap"],
                            consent=ConsentRecord(
                                formalities=["written_release", "explicit_consent"],
                                signed_at="2026-12-01T10:00:00Z", text_sha256="a" * 64))
        d = gate.check(_swap())
        assert d.faces[0].identity == "consented" and d.faces[0].grant_id == signed.grant_id
        assert d.verdict == "allow"


def test_an_app_adds_packs_to_the_deployment_s_and_cannot_remove_them(
        tmp_path: Path) -> None:
    with _gate(tmp_path, "eu") as gate:
        bob = gate.enroll([BOB], display_name="Bob", status="consenting")
        gate.grant(bob.subject_id, app_id="studio", operations=["face_swap"],
                   consent=ConsentRecord(formalities=["explicit_consent"]))
        assert gate.check(_swap()).jurisdictions == ["eu"]
        d = gate.check(_swap(jurisdictions=["cn"]))  # the app serves China too
        assert d.jurisdictions == ["cn", "eu"] and d.verdict == "needs_consent"
        d = gate.check(_swap(jurisdictions=[]))  # an empty list removes nothing
        assert d.jurisdictions == ["eu"]


def test_eu_outputs_must_carry_the_machine_readable_mark(tmp_path: Path) -> None:
    with _gate(tmp_path, "eu") as gate:
        d = gate.check(GateRequest(operation="txt2img", requester=STUDIO,
                                   prompt="a lighthouse at dusk"))
        assert d.verdict == "allow" and "mark_machine_readable" in d.obligations


def test_unknown_jurisdiction_codes_stop_start_up_naming_them(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown jurisdiction code 'fr'"):
        _gate(tmp_path, "eu,fr")
    with pytest.raises(PolicyError, match="valid codes"):
        from gate.api.keys import KeyStore

        with _gate(tmp_path / "ok", "") as gate:
            KeyStore(gate.parts.store.engine).create(  # type: ignore[attr-defined]
                "studio", ["check"], "xx")


def test_cn_outputs_get_the_visible_label_and_stay_traceable(tmp_path: Path) -> None:
    import cv2
    import numpy as np

    with _gate(tmp_path, "cn") as gate:
        bob = gate.enroll([BOB], display_name="Bob", status="consenting")
        gate.grant(bob.subject_id, app_id="studio", operations=["face_swap"],
                   consent=ConsentRecord(formalities=["separate_consent", "explicit_consent"],
                                         collected_by="portal"))
        d = gate.check(_swap())
        rng = np.random.default_rng(3)
        small = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)
        output = cv2.imencode(".png", cv2.resize(small, (640, 480)))[1].tobytes()
        labelled = gate.label(output, request_id=d.request_id, locale="zh-CN")
        assert labelled.visible and labelled.digest is not None
        assert gate.label_output(output, request_id=d.request_id) != output
        assert gate.trace(labelled.data).request_id == d.request_id
        png = labelled.data
        assert b"AIGC" in png or b"aigc" in png.lower()  # GB 45438 implicit label


def test_packs_set_retention_and_the_takedown_clock(tmp_path: Path) -> None:
    with _gate(tmp_path / "il", "us-il") as gate:
        assert gate.retention_days() == 1095
        report = gate.report(pdq="ab" * 32, reason="ncii")
        assert (report.deadline - report.created_at).total_seconds() == 48 * 3600
    with FaceGate.open(tmp_path / "plain", detector="fake", embedder="fake",
                       takedown_hours=24) as gate:
        assert gate.retention_days() is None
        report = gate.report(pdq="cd" * 32, reason="impersonation")
        assert (report.deadline - report.created_at).total_seconds() == 24 * 3600
