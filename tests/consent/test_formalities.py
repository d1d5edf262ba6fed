"""Consent in the form the law asks for (issue 18): a consent request made where a
jurisdiction requires a written release (us-il) asks for the person's signature under the
exact text shown, in their language (EN and ZH), and the grant records it; without it the
face is not ``consented`` there."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from gate.consent.config import ConsentConfig
from gate.consent.service import ConsentService
from gate.engine import FaceGate
from gate.errors import InvalidRequest
from gate.types import GateRequest, ImageInput, Requester
from tests.consent.conftest import TEST_CONFIG, answer, link_token, make_pose_gate, pose_picture

STUDIO = Requester(app_id="studio", user_id="u1")


@pytest.fixture
def il_gate(tmp_path: Path) -> Iterator[FaceGate]:
    gate = make_pose_gate(tmp_path / "il", jurisdictions="us-il")
    yield gate
    gate.close()


@pytest.fixture
def il_svc(il_gate: FaceGate) -> Iterator[ConsentService]:
    svc = ConsentService(il_gate, ConsentConfig(**TEST_CONFIG))
    yield svc
    svc.close()


def _swap(image: bytes) -> GateRequest:
    return GateRequest(operation="face_swap", requester=STUDIO,
                       images=[ImageInput(role="target", data=image)])


def test_a_written_release_is_signed_under_the_text_shown(il_gate: FaceGate,
                                                          il_svc: ConsentService) -> None:
    image = pose_picture(31, 0.0)
    decision = il_gate.check(_swap(image))
    assert decision.verdict == "needs_consent"
    assert "written_release" in decision.consent_needed[0].formalities
    request, link = il_svc.requests.create("studio", image=image, operation="face_swap")
    assert "written_release" in request.formalities
    new = il_svc.requests.open_link(link_token(link))
    challenge = il_svc.links.start_challenge(new.session)
    il_svc.requests.prove(new.session, challenge["challenge_id"],
                          answer(challenge["poses"], 31), display_name="Thirty-one")
    session = il_svc.links.session(new.token, "request")
    zh = il_svc.requests.view(session, "zh")
    assert zh["locale"] == "zh" and "书面同意" in zh["consent_text"]
    assert zh["signature_required"] is True
    en = il_svc.requests.view(session, "en")
    assert "written release" in en["consent_text"]
    assert en["text_sha256"] == hashlib.sha256(en["consent_text"].encode()).hexdigest()

    with pytest.raises(InvalidRequest, match="signed"):  # no signature: no grant
        il_svc.requests.decide(session, True, locale="en", text_sha256=en["text_sha256"])
    with pytest.raises(InvalidRequest, match="signed"):  # a text other than the one shown
        il_svc.requests.decide(session, True, locale="en", signature="T. One",
                               text_sha256="0" * 64)
    resolved = il_svc.requests.decide(session, True, locale="zh", signature="三十一",
                                      text_sha256=zh["text_sha256"])
    assert resolved.state == "granted"
    grant = il_gate.lifecycle.get_grant(resolved.grant_id or "")
    assert grant.consent is not None
    assert {"written_release", "explicit_consent", "separate_consent",
            "informed_consent"} <= set(grant.consent.formalities)
    assert grant.consent.text_sha256 == zh["text_sha256"] and grant.consent.locale == "zh"
    d = il_gate.check(_swap(image))
    assert d.verdict == "allow" and d.faces[0].identity == "consented"


def test_without_a_jurisdiction_no_signature_is_asked(pose_gate: FaceGate,
                                                     pose_svc: ConsentService) -> None:
    image = pose_picture(32, 0.0)
    request, link = pose_svc.requests.create("studio", image=image, operation="face_swap")
    assert request.formalities == []
    new = pose_svc.requests.open_link(link_token(link))
    assert pose_svc.requests.view(new.session)["signature_required"] is False
