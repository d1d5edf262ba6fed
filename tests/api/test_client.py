"""GateClient: the same method names and result types as FaceGate, errors by code."""

from __future__ import annotations

from typing import Any

import pytest

from gate.client import GateClient, HttpError
from gate.errors import ConsentError, InvalidRequest, NotFound, UnsupportedMediaType
from gate.types import (
    AuditVerification,
    Decision,
    GateRequest,
    Grant,
    ImageInput,
    Requester,
    Subject,
)
from tests.api.conftest import Keys
from tests.conftest import noise_png

BOB = noise_png(2)
U1 = Requester(app_id="ignored-the-key-decides", user_id="u1")


def swap(image: bytes, request_id: str | None = None) -> GateRequest:
    return GateRequest(operation="face_swap", images=[ImageInput(role="target", data=image)],
                       requester=U1, request_id=request_id)


def test_same_surface_as_facegate() -> None:
    from gate.engine import FaceGate

    for name in ("check", "check_output", "enroll", "get_subject", "list_subjects",
                 "set_status", "erase", "grant", "revoke", "list_grants", "verify_audit",
                 "audit_events", "readiness", "close"):
        assert callable(getattr(GateClient, name)) and callable(getattr(FaceGate, name)), name


def test_round_trip(client: Any, keys: Keys) -> None:
    admin = GateClient("http://testserver", keys.admin, http=client)
    app = GateClient("http://testserver", keys.studio, http=client)
    bob = admin.enroll([BOB], display_name="Bob", status="consenting", aliases=["B"])
    assert isinstance(bob, Subject) and admin.get_subject(bob.subject_id) == bob
    assert admin.list_subjects() == [bob]
    grant = admin.grant(bob.subject_id, app_id="studio", operations=["face_swap"])
    assert isinstance(grant, Grant) and grant.token  # signed when it is made
    assert admin.list_grants(bob.subject_id) == [grant.model_copy(update={"token": None})]
    d = app.check(swap(BOB, "c-1"))
    assert isinstance(d, Decision) and d.verdict == "allow" and d.request_id == "c-1"
    out = app.check_output(noise_png(5), request_id="c-1", requester=U1)
    assert out.request_id == "c-1" and out.faces[0].role == "output"
    assert admin.revoke(grant.grant_id).revoked_at is not None
    assert app.check(swap(BOB)).verdict != "allow"
    assert admin.set_status(bob.subject_id, "protected").status == "protected"
    events = admin.audit_events(since_seq=0, limit=1000)
    assert {e["event"]["app_id"] for e in events if e["event"]["kind"] == "check"} == {"studio"}
    assert admin.verify_audit() == AuditVerification(ok=True, events=len(events))
    assert admin.erase(bob.subject_id) is True
    assert app.readiness()["database"] is True


def test_errors_come_back_as_gate_errors(client: Any, keys: Keys) -> None:
    admin = GateClient("http://testserver", keys.admin, http=client)
    app = GateClient("http://testserver", keys.studio, http=client)
    with pytest.raises(NotFound):
        admin.get_subject("sub_missing")
    with pytest.raises(NotFound):
        admin.erase("sub_missing")
    with pytest.raises(ConsentError):
        admin.grant("sub_missing", app_id="x", operations=["face_swap"])
    with pytest.raises(UnsupportedMediaType):
        app.check(swap(b"not an image"))
    with pytest.raises(InvalidRequest):
        admin.enroll([], display_name="Nobody")
    with pytest.raises(HttpError) as forbidden:
        app.list_grants()
    assert forbidden.value.code == "forbidden" and forbidden.value.status == 403
    bad = GateClient("http://testserver", "gk_wrong", http=client)
    with pytest.raises(HttpError) as unauthorized:
        bad.check(swap(BOB))
    assert unauthorized.value.status == 401


def test_unreachable_server_raises() -> None:
    from gate.client import GateUnreachable

    with GateClient("http://127.0.0.1:9", "gk_x", timeout_s=1) as c, \
            pytest.raises(GateUnreachable):
        c.check(swap(BOB))


def test_incident_response_through_the_client(client: Any, keys: Keys) -> None:
    from gate.incident.reports import Report
    from gate.incident.trace import Trace
    from tests.api.test_incident_http import _picture

    admin = GateClient("http://testserver", keys.admin, http=client)
    app = GateClient("http://testserver", keys.studio, http=client)
    d = app.check(GateRequest(operation="txt2img", prompt="a lake", requester=U1))
    output = _picture(21)
    labelled = app.label_output(output, request_id=d.request_id)
    assert isinstance(labelled, bytes) and labelled != output
    found = admin.trace(labelled)
    assert isinstance(found, Trace) and found.found and found.request_id == d.request_id
    assert found.record is not None and found.record.verdict == "allow"
    assert admin.trace(_picture(22)) == Trace(found=False)
    report = app.report(image=labelled, reason="ncii")
    assert isinstance(report, Report) and report.status == "open"
    assert report.trace is not None and report.trace.request_id == d.request_id
    with pytest.raises(InvalidRequest):
        app.label_output(output, request_id="req_unknown")
