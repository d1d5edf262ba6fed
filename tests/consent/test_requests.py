"""Consent requests end to end at the service level: from a ``needs_consent`` decision to a
grant scoped exactly to it, through a one-time link and a liveness-checked selfie burst;
refusal, expiry, webhooks signed with HMAC-SHA256; self-enrolment."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any, ClassVar

import pytest
from sqlalchemy import select

from gate.consent import tables as t
from gate.consent.config import ConsentConfig
from gate.consent.links import LinkInvalid, LivenessFailed, SessionInvalid
from gate.consent.offline import verify_grant_token
from gate.consent.proof import IdentityMismatch
from gate.consent.requests import (
    SIGNATURE_HEADER,
    RequestClosed,
    WebhookSignatureInvalid,
    describe_scope,
    sign_webhook,
    verify_webhook,
)
from gate.consent.service import ConsentService
from gate.engine import FaceGate
from gate.errors import ConsentError, InvalidRequest
from gate.types import Decision, GateRequest, ImageInput, Requester
from tests.consent.conftest import TEST_CONFIG, answer, link_token, pose_picture

STUDIO = Requester(app_id="studio", user_id="u1")
STRANGER = 7


def swap(image: bytes, purpose: str | None = "poster") -> GateRequest:
    return GateRequest(operation="face_swap", images=[ImageInput(role="target", data=image)],
                       requester=STUDIO, purpose=purpose)


def ask(svc: ConsentService, decision: Decision, image: bytes, **kw: Any) -> tuple[Any, str]:
    need = decision.consent_needed[0]
    face = next(f for f in decision.faces if f.face_ref == need.face_ref)
    return svc.requests.create(
        need.app_id, image=image, bbox=face.bbox, operation=need.operation,
        content=need.content, user_id=need.user_id, purpose="poster",
        decision_request_id=decision.request_id, face_ref=need.face_ref, **kw)


def template_of(svc: ConsentService, request_id: str) -> bytes | None:
    c = t.consent_requests.c
    with svc.engine.connect() as conn:
        return conn.execute(select(c.template).where(c.request_id == request_id)).scalar()


def test_unknown_face_request_grant_then_allowed(pose_gate: FaceGate,
                                                 pose_svc: ConsentService) -> None:
    image = pose_picture(STRANGER, 0.0)
    decision = pose_gate.check(swap(image))
    assert decision.verdict == "needs_consent"
    request, link = ask(pose_svc, decision, image, grant_ttl_s=86400, max_uses=3)
    assert request.state == "pending" and request.subject_id is None
    assert link.startswith("http://testserver/portal/request.html#t=")
    blob = template_of(pose_svc, request.request_id)
    assert blob is not None and blob[:16] == pose_gate.parts.cipher.key_id.encode()

    new = pose_svc.requests.open_link(link_token(link))
    with pytest.raises(LinkInvalid):  # single use
        pose_svc.requests.open_link(link_token(link))
    view = pose_svc.requests.view(new.session)
    assert view["needs_name"] and not view["verified"]
    assert view["scope"][0] == ("The app “studio” asks to use your face for putting your "
                                "face onto someone else's body or into other pictures.")
    with pytest.raises(SessionInvalid):  # no answer before the proof
        pose_svc.requests.decide(new.session, True)

    challenge = pose_svc.links.start_challenge(new.session)
    frames = answer(challenge["poses"], STRANGER)
    assert pose_svc.requests.prove(new.session, challenge["challenge_id"], frames,
                                      display_name="Stranger Seven")
    with pytest.raises(LivenessFailed):  # a challenge is answered once
        pose_svc.requests.prove(new.session, challenge["challenge_id"], frames)
    session = pose_svc.links.session(new.token, "request")
    assert session.verified_subject_id is not None
    subject = pose_gate.get_subject(session.verified_subject_id)
    assert subject.status == "consenting" and subject.template_count >= 1

    resolved = pose_svc.requests.decide(session, True)
    assert resolved.state == "granted" and resolved.grant_id
    assert template_of(pose_svc, request.request_id) is None  # deleted on resolution
    grant = pose_gate.parts.store.get_grant(resolved.grant_id)
    assert grant is not None
    assert (grant.app_id, grant.user_id, grant.operations, grant.content, grant.purpose,
            grant.max_uses) == ("studio", "u1", ["face_swap"], ["general"], "poster", 3)
    assert grant.expires_at is not None
    assert abs((grant.expires_at - datetime.now(UTC)).total_seconds() - 86400) < 60

    allowed = pose_gate.check(swap(image))
    assert allowed.verdict == "allow" and allowed.faces[0].grant_id == grant.grant_id
    assert pose_gate.check(swap(image, purpose="other")).verdict == "needs_consent"
    polled = pose_svc.requests.get("studio", request.request_id)
    claims = verify_grant_token(polled.grant_token or "", jwks=pose_svc.jwks(), app_id="studio")
    assert claims.gid == grant.grant_id and claims.max_uses == 3
    with pytest.raises(SessionInvalid):  # the session ended with the answer
        pose_svc.links.session(new.token, "request")


def test_other_person_cannot_answer(pose_gate: FaceGate, pose_svc: ConsentService) -> None:
    image = pose_picture(STRANGER, 0.0)
    _, link = ask(pose_svc, pose_gate.check(swap(image)), image)
    new = pose_svc.requests.open_link(link_token(link))
    challenge = pose_svc.links.start_challenge(new.session)
    with pytest.raises(IdentityMismatch):
        pose_svc.requests.prove(new.session, challenge["challenge_id"],
                                   answer(challenge["poses"], 9), display_name="Impostor")
    assert pose_gate.list_subjects() == []  # nobody enrolled
    challenge = pose_svc.links.start_challenge(new.session)
    with pytest.raises(LivenessFailed):  # the right face, the wrong turns
        pose_svc.requests.prove(new.session, challenge["challenge_id"],
                                   answer(["front", "front", "front"], STRANGER))


def test_refusal_deletes_the_template(pose_gate: FaceGate, pose_svc: ConsentService) -> None:
    image = pose_picture(STRANGER, 0.0)
    request, link = ask(pose_svc, pose_gate.check(swap(image)), image)
    new = pose_svc.requests.open_link(link_token(link))
    challenge = pose_svc.links.start_challenge(new.session)
    pose_svc.requests.prove(new.session, challenge["challenge_id"],
                               answer(challenge["poses"], STRANGER), display_name="S")
    resolved = pose_svc.requests.decide(pose_svc.links.session(new.token, "request"), False)
    assert resolved.state == "refused" and resolved.grant_id is None
    assert template_of(pose_svc, request.request_id) is None
    assert pose_gate.list_grants() == []
    assert pose_gate.check(swap(image)).verdict == "needs_consent"


def test_enrolled_subject_request_matches_their_templates(pose_gate: FaceGate,
                                                         pose_svc: ConsentService) -> None:
    image = pose_picture(5, 0.0)
    subject = pose_gate.enroll([image], "Five", status="consenting")
    decision = pose_gate.check(swap(image))
    assert decision.verdict == "needs_consent"
    assert "consent.subject_not_covered" in decision.rule_ids
    request, link = ask(pose_svc, decision, image)
    assert request.subject_id == subject.subject_id
    assert template_of(pose_svc, request.request_id) is None  # nothing biometric stored
    new = pose_svc.requests.open_link(link_token(link))
    assert not pose_svc.requests.view(new.session)["needs_name"]
    challenge = pose_svc.links.start_challenge(new.session)
    pose_svc.requests.prove(new.session, challenge["challenge_id"],
                               answer(challenge["poses"], 5))
    session = pose_svc.links.session(new.token, "request")
    assert pose_svc.requests.decide(session, True).state == "granted"
    assert pose_gate.check(swap(image)).verdict == "allow"
    assert len(pose_gate.list_subjects()) == 1


def test_protected_person_is_not_asked(pose_gate: FaceGate, pose_svc: ConsentService) -> None:
    image = pose_picture(6, 0.0)
    pose_gate.enroll([image], "Six", status="protected")
    with pytest.raises(ConsentError, match="does not accept"):
        pose_svc.requests.create("studio", image=image, operation="face_swap")


def test_bad_requests(pose_svc: ConsentService) -> None:
    image = pose_picture(STRANGER, 0.0)
    with pytest.raises(InvalidRequest, match="operation"):
        pose_svc.requests.create("studio", image=image, operation="teleport")
    with pytest.raises(InvalidRequest, match="content"):
        pose_svc.requests.create("studio", image=image, operation="edit", content=["spicy"])
    with pytest.raises(InvalidRequest, match="bbox"):
        pose_svc.requests.create("studio", image=image, operation="edit", bbox=[500, 500, 600, 600])
    with pytest.raises(ConsentError, match="no such consent request"):
        pose_svc.requests.get("other", "creq_nope")


def test_other_app_cannot_poll(pose_gate: FaceGate, pose_svc: ConsentService) -> None:
    image = pose_picture(STRANGER, 0.0)
    request, _ = ask(pose_svc, pose_gate.check(swap(image)), image)
    with pytest.raises(ConsentError, match="no such consent request"):
        pose_svc.requests.get("other", request.request_id)


def test_expiry_with_an_injected_clock(pose_gate: FaceGate) -> None:
    now = [datetime.now(UTC)]
    svc = ConsentService(pose_gate, ConsentConfig(**TEST_CONFIG), clock=lambda: now[0])
    image = pose_picture(STRANGER, 0.0)
    request, link = ask(svc, pose_gate.check(swap(image)), image, expires_in_s=3600)
    now[0] += timedelta(hours=2)
    with pytest.raises(LinkInvalid):
        svc.requests.open_link(link_token(link))
    assert svc.requests.get("studio", request.request_id).state == "expired"
    assert template_of(svc, request.request_id) is None
    assert svc.requests.expire(now[0]) == 0  # already expired by the poll
    svc.close()


def test_session_closes_when_the_request_expires(pose_gate: FaceGate) -> None:
    now = [datetime.now(UTC)]
    svc = ConsentService(pose_gate, ConsentConfig(**TEST_CONFIG), clock=lambda: now[0])
    image = pose_picture(STRANGER, 0.0)
    _, link = ask(svc, pose_gate.check(swap(image)), image, expires_in_s=600)
    new = svc.requests.open_link(link_token(link))
    now[0] += timedelta(minutes=11)
    with pytest.raises(SessionInvalid):
        svc.links.session(new.token, "request")
    with pytest.raises(RequestClosed):
        svc.requests.decide(new.session, True)
    svc.close()


# -- webhooks ------------------------------------------------------------------------------
class _Receiver(BaseHTTPRequestHandler):
    received: ClassVar[list[tuple[dict[str, str], bytes]]]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).received.append((dict(self.headers), body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        return None


@pytest.fixture
def receiver() -> Iterator[tuple[str, list[tuple[dict[str, str], bytes]]]]:
    received: list[tuple[dict[str, str], bytes]] = []
    handler = type("Receiver", (_Receiver,), {"received": received})
    server = HTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hooks/consent", received
    server.shutdown()
    server.server_close()


def test_signed_webhook_reaches_a_local_server(pose_gate: FaceGate, pose_svc: ConsentService,
                                               receiver: Any) -> None:
    url, received = receiver
    secret = pose_svc.requests.set_webhook("studio", url)
    image = pose_picture(STRANGER, 0.0)
    request, link = ask(pose_svc, pose_gate.check(swap(image)), image)
    new = pose_svc.requests.open_link(link_token(link))
    challenge = pose_svc.links.start_challenge(new.session)
    pose_svc.requests.prove(new.session, challenge["challenge_id"],
                               answer(challenge["poses"], STRANGER), display_name="S")
    pose_svc.requests.decide(pose_svc.links.session(new.token, "request"), True)
    assert pose_svc.sender.flush(10)
    assert len(received) == 1
    headers, body = received[0]
    verify_webhook(secret, body, headers[SIGNATURE_HEADER])
    event = json.loads(body)
    assert event["event"] == "consent_request.granted"
    assert event["request"]["request_id"] == request.request_id
    assert event["request"]["state"] == "granted" and "grant_token" not in event["request"]
    assert headers["X-Gate-Event"] == "consent_request.granted"
    with pytest.raises(WebhookSignatureInvalid):
        verify_webhook(secret, body.replace(b"granted", b"refused"), headers[SIGNATURE_HEADER])
    with pytest.raises(WebhookSignatureInvalid):
        verify_webhook("whsec_other", body, headers[SIGNATURE_HEADER])
    with pytest.raises(WebhookSignatureInvalid):
        verify_webhook(secret, body, headers[SIGNATURE_HEADER], now=time.time() + 3600)


def test_webhook_signature_scheme() -> None:
    header = sign_webhook("s3cret", b'{"a":1}', 1_700_000_000)
    assert header.startswith("t=1700000000,v1=") and len(header.split("v1=")[1]) == 64
    verify_webhook("s3cret", b'{"a":1}', header, now=1_700_000_100)
    for bad in ("", "t=x,v1=00", "v1=abc", "t=1700000000"):
        with pytest.raises(WebhookSignatureInvalid):
            verify_webhook("s3cret", b'{"a":1}', bad, now=1_700_000_000)


def test_expiry_webhook(pose_gate: FaceGate, receiver: Any) -> None:
    url, received = receiver
    now = [datetime.now(UTC)]
    svc = ConsentService(pose_gate, ConsentConfig(**TEST_CONFIG), clock=lambda: now[0])
    secret = svc.requests.set_webhook("studio", url)
    image = pose_picture(STRANGER, 0.0)
    ask(svc, pose_gate.check(swap(image)), image, expires_in_s=120)
    now[0] += timedelta(minutes=5)
    assert svc.requests.expire(now[0]) == 1
    assert svc.sender.flush(10)
    headers, body = received[0]
    verify_webhook(secret, body, headers[SIGNATURE_HEADER])
    assert json.loads(body)["event"] == "consent_request.expired"
    svc.close()


def test_plain_language_scope() -> None:
    lines = describe_scope(app_id="studio", operation="avatar_train",
                           content=["general", "sexual"], user_id=None, purpose=None,
                           grant_ttl_s=7 * 86400, max_uses=2)
    assert lines[1] == ("Kind of pictures: ordinary pictures (nothing sexual, violent or "
                        "political) and SEXUAL or NUDE pictures.")
    assert "For any user of that app." in lines
    assert "For 7 days after you agree." in lines and "At most 2 uses." in lines


# -- self-enrolment ------------------------------------------------------------------------
def test_self_enrolment(pose_gate: FaceGate, pose_svc: ConsentService) -> None:
    new, challenge = pose_svc.portal.start_enrollment()
    subject, portal = pose_svc.portal.complete_enrollment(
        new.session, challenge["challenge_id"], answer(challenge["poses"], 12), "Twelve",
        guardian=True)
    assert subject.status == "protected" and subject.guardian
    assert pose_svc.links.session(portal.token, "portal").target == subject.subject_id
    assert pose_gate.check(swap(pose_picture(12, 0.0))).verdict == "deny"
    again, challenge = pose_svc.portal.start_enrollment()
    with pytest.raises(ConsentError, match="enrolled already"):
        pose_svc.portal.complete_enrollment(again.session, challenge["challenge_id"],
                                     answer(challenge["poses"], 12, start=50), "Twelve")


def test_self_enrolment_is_off_by_default(pose_gate: FaceGate) -> None:
    svc = ConsentService(pose_gate)
    with pytest.raises(ConsentError) as err:
        svc.portal.start_enrollment()
    assert err.value.code == "self_enrolment_disabled"
    svc.close()
