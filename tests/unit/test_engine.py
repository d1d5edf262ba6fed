"""The engine's rules, identity classes and lifecycle, on fast fakes.

The fake detector sees one frontal face filling each image; the fake embedder gives
identical crops identical vectors. So an image's bytes stand for a person.
"""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from gate.engine import FaceGate
from gate.errors import ConsentError, EnrollmentError, NotFound, StorageError
from gate.types import GateRequest, ImageInput, Requester
from gate.vision.detect import Detection, FakeDetector, whole_image_face
from tests.conftest import noise_png

ADA, BOB, CAROL, STRANGER = (noise_png(i) for i in (1, 2, 3, 4))
STUDIO_U1 = Requester(app_id="studio", user_id="u1")


def req(operation: str, *images: bytes, content: list[str] | None = None,
        requester: Requester = STUDIO_U1, prompt: str = "", role: str = "target",
        negative: str = "") -> GateRequest:
    return GateRequest(operation=operation,  # type: ignore[arg-type]
                       images=[ImageInput(role=role, data=i) for i in images],  # type: ignore[arg-type]
                       content=content or ["general"], prompt=prompt,  # type: ignore[arg-type]
                       negative_prompt=negative, requester=requester)


@pytest.fixture
def gate(fake_gate: Any) -> FaceGate:
    return fake_gate  # type: ignore[no-any-return]


def test_protected_subject_is_denied(gate: FaceGate) -> None:
    ada = gate.enroll([ADA], display_name="Ada", status="protected")
    d = gate.check(req("face_swap", ADA))
    assert d.verdict == "deny"
    assert d.faces[0].identity == "protected"
    assert d.faces[0].subject_id == ada.subject_id
    assert d.faces[0].similarity is not None and d.faces[0].similarity > 0.99
    assert "core.protected_subject" in d.rule_ids
    assert d.reasons[0].face_ref == d.faces[0].face_ref


def test_protected_subject_denied_even_with_a_grant(gate: FaceGate) -> None:
    ada = gate.enroll([ADA], display_name="Ada", status="consenting")
    grant = gate.grant(ada.subject_id, app_id="studio", operations=["face_swap"],
                       content=["general"])
    assert gate.check(req("face_swap", ADA)).verdict == "allow"
    gate.set_status(ada.subject_id, "protected")  # "protect me" ends every grant at once
    assert gate.check(req("face_swap", ADA)).verdict == "deny"
    assert gate.lifecycle.get_grant(grant.grant_id).revoked_at is not None
    with pytest.raises(ConsentError, match="protected"):  # and none can be recorded
        gate.grant(ada.subject_id, app_id="studio", operations=["face_swap"])


def test_consented_face_swap_is_allowed(gate: FaceGate) -> None:
    bob = gate.enroll([BOB], display_name="Bob", status="consenting")
    grant = gate.grant(bob.subject_id, app_id="studio", operations=["face_swap", "img2img"],
                       content=["general"], expires_at=None)
    d = gate.check(req("face_swap", BOB))
    assert d.verdict == "allow"
    assert d.faces[0].identity == "consented"
    assert d.faces[0].grant_id == grant.grant_id
    assert d.rule_ids == ["allow.consented"]
    assert "label_ai_content" in d.obligations


@pytest.mark.parametrize(("grant_kwargs", "request_kwargs"), [
    ({"app_id": "other"}, {}),
    ({"app_id": "studio", "user_id": "someone-else"}, {}),
    ({"app_id": "studio", "operations": ["img2img"]}, {}),
    ({"app_id": "studio", "purpose": "ads"}, {}),
])
def test_grant_scope_must_cover_the_request(gate: FaceGate, grant_kwargs: dict[str, Any],
                                            request_kwargs: dict[str, Any]) -> None:
    bob = gate.enroll([BOB], display_name="Bob", status="consenting")
    kwargs = {"operations": ["face_swap"], "content": ["general"], **grant_kwargs}
    gate.grant(bob.subject_id, **kwargs)
    d = gate.check(req("face_swap", BOB, **request_kwargs))
    assert d.verdict == "needs_consent"
    assert d.faces[0].identity == "protected"
    assert d.faces[0].subject_status == "consenting"
    assert d.rule_ids == ["consent.subject_not_covered"]
    assert d.consent_needed[0].subject_id == bob.subject_id
    assert d.consent_needed[0].operation == "face_swap"


def test_sexual_content_needs_sexual_consent(gate: FaceGate) -> None:
    bob = gate.enroll([BOB], display_name="Bob", status="consenting")
    gate.grant(bob.subject_id, app_id="studio", operations=["img2img"], content=["general"])
    d = gate.check(req("img2img", BOB, content=["sexual"]))
    assert d.verdict == "deny"
    assert "sexual.face_not_covered" in d.rule_ids


def test_sexual_grant_covers_sexual_content(gate: FaceGate) -> None:
    bob = gate.enroll([BOB], display_name="Bob", status="consenting")
    gate.grant(bob.subject_id, app_id="studio", operations=["img2img"],
               content=["general", "sexual"])
    assert gate.check(req("img2img", BOB, content=["sexual"])).verdict == "allow"


def test_self_use_is_allowed(gate: FaceGate) -> None:
    gate.enroll([CAROL], display_name="Carol", status="consenting", owner=STUDIO_U1)
    d = gate.check(req("face_swap", CAROL))
    assert d.verdict == "allow"
    assert d.faces[0].identity == "self"
    assert d.rule_ids == ["allow.self"]


def test_self_needs_same_app_and_user(gate: FaceGate) -> None:
    gate.enroll([CAROL], display_name="Carol", status="consenting",
                owner=Requester(app_id="studio", user_id="carol"))
    d = gate.check(req("face_swap", CAROL))
    assert d.faces[0].identity == "protected"
    assert d.verdict == "needs_consent"


@pytest.mark.parametrize(("operation", "content", "verdict", "rule"), [
    ("face_swap", "general", "needs_consent", "consent.unknown_face_sensitive"),
    ("video_face_swap", "general", "needs_consent", "consent.unknown_face_sensitive"),
    ("inpaint", "general", "needs_consent", "consent.unknown_face_sensitive"),
    ("avatar_train", "general", "needs_consent", "consent.unknown_face_sensitive"),
    ("edit", "general", "needs_consent", "consent.unknown_face_sensitive"),
    ("nudify", "general", "deny", "nudify.uncovered_face"),
    ("img2img", "general", "allow", "allow.face_unchanged"),
    ("face_restore", "general", "allow", "allow.face_unchanged"),
    ("img2img", "sexual", "deny", "sexual.face_not_covered"),
])
def test_unknown_face(gate: FaceGate, operation: str, content: str, verdict: str,
                      rule: str) -> None:
    d = gate.check(req(operation, STRANGER, content=[content]))
    assert d.faces[0].identity == "unknown"
    assert d.verdict == verdict
    assert rule in d.rule_ids


def test_nudify_is_sexual_content(gate: FaceGate) -> None:
    d = gate.check(req("nudify", STRANGER))
    assert "sexual" in d.content
    assert "sexual.face_not_covered" in d.rule_ids


def test_no_face_is_allowed_but_nudify_without_face_is_not(fake_gate: Any,
                                                           tmp_path: Path) -> None:
    assert fake_gate.check(req("txt2img")).verdict == "allow"
    assert fake_gate.check(req("txt2img")).rule_ids == ["allow.no_faces"]
    d = fake_gate.check(req("nudify"))
    assert d.verdict == "deny"
    assert d.rule_ids == ["nudify.no_face"]


def test_unknown_operation_is_rejected() -> None:
    with pytest.raises(ValidationError):
        GateRequest(operation="deepfake", requester=STUDIO_U1)  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        GateRequest(operation="img2img", content=["weird"], requester=STUDIO_U1)  # type: ignore[list-item]
    with pytest.raises(ValidationError):
        ImageInput(role="selfie", data=b"x")  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        GateRequest(operation="img2img", requester=STUDIO_U1, extra=1)  # type: ignore[call-arg]


def test_content_synonyms_are_normalised() -> None:
    r = GateRequest(operation="img2img", content=["nudity", "none", "violence"],
                    requester=STUDIO_U1)
    assert r.content == ["sexual", "general", "violent"]


def test_revocation_takes_effect_at_once(gate: FaceGate) -> None:
    bob = gate.enroll([BOB], display_name="Bob", status="consenting")
    grant = gate.grant(bob.subject_id, app_id="studio", operations=["face_swap"])
    assert gate.check(req("face_swap", BOB)).verdict == "allow"
    revoked = gate.revoke(grant.grant_id)
    assert revoked.revoked_at is not None
    d = gate.check(req("face_swap", BOB))
    assert d.verdict == "needs_consent"
    assert d.faces[0].grant_id is None


def test_expired_and_future_grants_do_not_cover(gate: FaceGate) -> None:
    bob = gate.enroll([BOB], display_name="Bob", status="consenting")
    now = datetime.now(UTC)
    gate.grant(bob.subject_id, app_id="studio", operations=["face_swap"],
               expires_at=now - timedelta(seconds=1))
    gate.grant(bob.subject_id, app_id="studio", operations=["face_swap"],
               not_before=now + timedelta(hours=1))
    assert gate.check(req("face_swap", BOB)).verdict == "needs_consent"
    gate.grant(bob.subject_id, app_id="studio", operations=["face_swap"],
               expires_at=now + timedelta(hours=1))
    assert gate.check(req("face_swap", BOB)).verdict == "allow"


def test_max_uses_is_counted(gate: FaceGate) -> None:
    bob = gate.enroll([BOB], display_name="Bob", status="consenting")
    grant = gate.grant(bob.subject_id, app_id="studio", operations=["face_swap"], max_uses=2)
    assert [gate.check(req("face_swap", BOB)).verdict for _ in range(3)] == [
        "allow", "allow", "needs_consent"]
    stored = gate.parts.store.get_grant(grant.grant_id)
    assert stored is not None and stored.uses == 2


def test_erased_subject_becomes_unknown(gate: FaceGate, tmp_path: Path) -> None:
    ada = gate.enroll([ADA], display_name="Ada", status="protected")
    assert gate.check(req("face_swap", ADA)).verdict == "deny"
    gate.erase(ada.subject_id)
    d = gate.check(req("face_swap", ADA))
    assert d.faces[0].identity == "unknown"
    assert d.faces[0].subject_id is None
    assert len(gate.parts.index) == 0
    with pytest.raises(NotFound):
        gate.get_subject(ada.subject_id)
    db = sqlite3.connect(tmp_path / "data" / "gate.db")
    for table in ("subjects", "templates", "grants"):
        rows = db.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
        assert rows == 0, table
    assert "Ada" not in str(db.execute("SELECT body FROM audit_events").fetchall())
    db.close()
    with pytest.raises(NotFound):
        gate.erase(ada.subject_id)


def test_several_faces_all_must_be_covered(gate: FaceGate) -> None:
    bob = gate.enroll([BOB], display_name="Bob", status="consenting")
    gate.grant(bob.subject_id, app_id="studio", operations=["face_swap"])
    d = gate.check(GateRequest(operation="face_swap", requester=STUDIO_U1, images=[
        ImageInput(role="source", data=BOB), ImageInput(role="target", data=STRANGER)]))
    assert d.verdict == "needs_consent"
    assert [f.identity for f in d.faces] == ["consented", "unknown"]
    assert [f.image_index for f in d.faces] == [0, 1]
    assert d.consent_needed[0].face_ref == d.faces[1].face_ref


def test_enrolment_needs_exactly_one_face(tmp_path: Path) -> None:
    def two_faces(image: np.ndarray) -> list[Detection]:
        left, right = image[:, :56], image[:, 56:]
        shifted = whole_image_face(right)[0]
        moved = Detection(bbox=(56.0, 0.0, 112.0, 112.0), score=shifted.score,
                          landmarks=tuple((x + 56, y) for x, y in shifted.landmarks))
        return [whole_image_face(left)[0], moved]

    gate = FaceGate.open(tmp_path, detector="fake", embedder="fake")
    try:
        gate.parts = gate.parts.__class__(**{**_parts(gate), "detector": FakeDetector(
            lambda image: [])})
        with pytest.raises(EnrollmentError, match="no face"):
            gate.enroll([ADA], display_name="Ada")
        gate.parts = gate.parts.__class__(**{**_parts(gate), "detector": FakeDetector(
            two_faces)})
        with pytest.raises(EnrollmentError, match="2 faces"):
            gate.enroll([ADA], display_name="Ada")
        with pytest.raises(EnrollmentError):
            gate.enroll([], display_name="Ada")
    finally:
        gate.close()


def _parts(gate: FaceGate) -> dict[str, Any]:
    return {f: getattr(gate.parts, f) for f in gate.parts.__dataclass_fields__}


def test_templates_are_encrypted_at_rest(gate: FaceGate, tmp_path: Path) -> None:
    gate.enroll([ADA], display_name="Ada", status="protected")
    db = sqlite3.connect(tmp_path / "data" / "gate.db")
    (blob,) = db.execute("SELECT ciphertext FROM templates").fetchone()
    db.close()
    subject_id = gate.list_subjects()[0].subject_id
    pack = gate.parts.embedder.pack_id
    plain = gate.parts.cipher.decrypt(blob, subject_id=subject_id, pack_id=pack)
    assert np.isclose(np.linalg.norm(plain), 1.0, atol=1e-4)
    assert plain.astype("<f4").tobytes() not in blob  # stored bytes are ciphertext
    with pytest.raises(StorageError):  # bound to its subject: cannot be moved to another row
        gate.parts.cipher.decrypt(blob, subject_id="sub_other", pack_id=pack)
    key_file = tmp_path / "data" / "keys" / "template.key"
    assert key_file.stat().st_mode & 0o777 == 0o600


def test_decision_never_carries_embeddings_or_pixels(gate: FaceGate) -> None:
    gate.enroll([ADA], display_name="Ada", status="protected")
    d = gate.check(req("face_swap", ADA))
    dumped = d.model_dump_json()
    assert len(dumped) < 4000
    for forbidden in ("embedding", "vector", "template", "pixels", "Ada"):
        assert forbidden not in dumped


def test_audit_chain_verifies_and_detects_tampering(gate: FaceGate, tmp_path: Path) -> None:
    gate.enroll([ADA], display_name="Ada", status="protected")
    for _ in range(3):
        gate.check(req("face_swap", ADA))
    assert gate.verify_audit().ok
    path = tmp_path / "data" / "gate.db"
    db = sqlite3.connect(path)
    db.execute("UPDATE audit_events SET body = replace(body, 'deny', 'allow') WHERE seq = 3")
    db.commit()
    result = gate.verify_audit()
    assert not result.ok and result.first_bad_seq == 3
    db.execute("UPDATE audit_events SET body = replace(body, 'allow', 'deny') WHERE seq = 3")
    db.execute("DELETE FROM audit_events WHERE seq = 2")
    db.commit()
    assert not gate.verify_audit().ok
    db.close()


def test_audit_detects_reordering() -> None:
    from gate.audit.chain import MemoryAuditSink

    sink = MemoryAuditSink()
    for i in range(4):
        sink.append({"kind": "check", "i": i})
    assert sink.verify().ok
    sink.rows[1], sink.rows[2] = sink.rows[2], sink.rows[1]
    assert not sink.verify().ok


def test_requests_are_audited_without_identifiers(gate: FaceGate) -> None:
    ada = gate.enroll([ADA], display_name="Ada", status="protected")
    d = gate.check(req("face_swap", ADA))
    records = gate.parts.audit.query(0, 100)
    event = next(r.event for r in records if r.event.get("request_id") == d.request_id)
    assert event["verdict"] == "deny"
    assert event["rule_ids"] == ["core.protected_subject"]
    assert ada.subject_id not in str(event)
    assert len(event["subject_refs"]) == 1
    assert event["image_sha256s"][0] == ImageInput(role="target", data=ADA).sha256


def test_reopening_keeps_everything(tmp_path: Path) -> None:
    gate = FaceGate.open(tmp_path, detector="fake", embedder="fake")
    ada = gate.enroll([ADA], display_name="Ada", status="protected")
    gate.close()
    gate = FaceGate.open(tmp_path, detector="fake", embedder="fake")
    try:
        d = gate.check(req("face_swap", ADA))
        assert d.verdict == "deny" and d.faces[0].subject_id == ada.subject_id
        assert gate.verify_audit().ok
    finally:
        gate.close()


def test_template_key_rotation_reencrypts_everything(tmp_path: Path) -> None:
    gate = FaceGate.open(tmp_path, detector="fake", embedder="fake")
    ada = gate.enroll([ADA, BOB], display_name="Ada", status="protected")
    old_key = (tmp_path / "keys" / "template.key").read_text()
    db = sqlite3.connect(tmp_path / "gate.db")
    before = {r[0] for r in db.execute("SELECT ciphertext FROM templates")}
    assert gate.rotate_template_key() == 2
    after = {r[0] for r in db.execute("SELECT ciphertext FROM templates")}
    key_ids = {r[0] for r in db.execute("SELECT key_id FROM templates")}
    db.close()
    assert not before & after
    assert key_ids == {gate.parts.cipher.key_id}
    assert (tmp_path / "keys" / "template.key").read_text() != old_key
    assert len((tmp_path / "keys" / "template.key").read_text().split("\n")) == 2  # one key
    assert gate.check(req("face_swap", ADA)).faces[0].subject_id == ada.subject_id
    gate.close()
    gate = FaceGate.open(tmp_path, detector="fake", embedder="fake")  # reopens with new key
    try:
        assert gate.check(req("face_swap", BOB)).verdict == "deny"
        assert gate.verify_audit().ok
    finally:
        gate.close()


def test_enrolled_name_in_prompt_counts_as_their_face(gate: FaceGate) -> None:
    ada = gate.enroll([ADA], display_name="Ada", status="protected", aliases=["阿达"])
    d = gate.check(req("txt2img", prompt="put Ada in a bikini"))
    assert d.verdict == "deny"
    assert d.faces[0].source == "prompt" and d.faces[0].subject_id == ada.subject_id
    assert "core.protected_subject" in d.rule_ids
    assert gate.check(req("txt2img", prompt="画一张阿达的照片")).verdict == "deny"
    assert gate.check(req("txt2img", prompt="a map of Canada")).verdict == "allow"


def test_prompt_intent_overrides_declared_general(gate: FaceGate) -> None:
    bob = gate.enroll([BOB], display_name="Bob", status="consenting")
    gate.grant(bob.subject_id, app_id="studio", operations=["img2img"], content=["general"])
    assert gate.check(req("img2img", BOB, prompt="on a beach")).verdict == "allow"
    d = gate.check(req("img2img", BOB, prompt="make him n u d e"))
    assert d.verdict == "deny"
    assert "sexual" in d.content
    d = gate.check(req("img2img", BOB, prompt="portrait", role="init") .model_copy(
        update={"negative_prompt": "clothes, shirt"}))
    assert d.verdict == "deny"


def test_ambiguous_match_takes_the_most_restrictive_reading(gate: FaceGate) -> None:
    bob = gate.enroll([BOB], display_name="Bob", status="consenting")
    gate.grant(bob.subject_id, app_id="studio", operations=["face_swap"])
    assert gate.check(req("face_swap", BOB)).verdict == "allow"
    twin = gate.enroll([BOB], display_name="Twin", status="consenting")  # same face
    d = gate.check(req("face_swap", BOB))
    assert d.verdict == "needs_consent" and d.faces[0].subject_id == twin.subject_id
    gate.erase(twin.subject_id)
    protected = gate.enroll([BOB], display_name="Lookalike", status="protected")
    d = gate.check(req("face_swap", BOB))
    assert d.verdict == "deny" and d.faces[0].subject_id == protected.subject_id


def test_erasure_through_one_process_reaches_another(tmp_path: Path) -> None:
    first = FaceGate.open(tmp_path, detector="fake", embedder="fake")
    second = FaceGate.open(tmp_path, detector="fake", embedder="fake")
    try:
        ada = first.enroll([ADA], display_name="Ada", status="protected")
        assert second.check(req("face_swap", ADA)).verdict == "deny"  # learnt from the feed
        first.erase(ada.subject_id)  # its feed rows were the newest: seq must still grow
        assert second.sync() >= 1
        assert len(second.parts.index) == 0
        assert second.check(req("face_swap", ADA)).faces[0].identity == "unknown"
    finally:
        first.close()
        second.close()


def test_hnsw_index_persists_and_erasure_deletes_the_file(tmp_path: Path) -> None:
    pytest.importorskip("usearch")
    from gate.identity.ann import HnswIndex

    index_file = tmp_path / "index" / "faces.usearch"
    opts = {"detector": "fake", "embedder": "fake", "index": "hnsw", "index_file": index_file}
    gate = FaceGate.open(tmp_path, **opts)
    ada = gate.enroll([ADA], display_name="Ada", status="protected")
    assert isinstance(gate.parts.index, HnswIndex)
    gate.close()
    assert index_file.is_file()  # saved at close, with its change-feed checkpoint
    gate = FaceGate.open(tmp_path, **opts)
    try:
        assert gate.parts.index.is_view  # type: ignore[attr-defined]  # memory-mapped
        bob = gate.enroll([BOB], display_name="Bob", status="protected")  # after checkpoint
        assert gate.check(req("face_swap", ADA)).faces[0].subject_id == ada.subject_id
        assert gate.check(req("face_swap", BOB)).faces[0].subject_id == bob.subject_id
        gate.erase(ada.subject_id)
        assert not index_file.exists()  # a saved copy could hold the erased templates
        assert gate.check(req("face_swap", ADA)).faces[0].identity == "unknown"
    finally:
        gate.close()


def _subject_with_template(gate: FaceGate, vector: np.ndarray, status: str) -> str:
    """A subject whose one template is exactly ``vector`` (crafted similarities)."""
    import uuid

    from gate.consent.store import utcnow
    from gate.types import Subject

    pack = gate.parts.embedder.pack_id
    subject = Subject(subject_id=f"sub_{uuid.uuid4().hex[:20]}", display_name="Crafted",
                      status=status, model_pack=pack, template_count=1,  # type: ignore[arg-type]
                      created_at=utcnow())
    blob = gate.parts.cipher.encrypt(vector.astype(np.float32), subject_id=subject.subject_id,
                                     pack_id=pack)
    gate.parts.store.add_subject(subject, [blob], gate.parts.cipher.key_id)
    gate.sync()
    return subject.subject_id


def test_a_protected_lookalike_blocks_only_within_the_protected_margin(gate: FaceGate) -> None:
    bob = gate.enroll([BOB], display_name="Bob", status="consenting")
    gate.grant(bob.subject_id, app_id="studio", operations=["face_swap"])
    pack = gate.parts.embedder.pack_id
    [blob] = gate.parts.store.subject_templates(bob.subject_id, pack)
    v = gate.parts.cipher.decrypt(blob, subject_id=bob.subject_id, pack_id=pack)
    w = np.random.default_rng(0).standard_normal(v.shape[0])
    w -= (w @ v) * v
    w /= np.linalg.norm(w)

    def at(similarity: float) -> np.ndarray:
        return np.asarray(similarity * v + np.sqrt(1 - similarity**2) * w)

    assert gate.settings.protected_margin == pytest.approx(0.15)
    calibrated = FaceGate(gate.parts, gate.settings.model_copy(
        update={"match_threshold": 0.36, "allow_threshold": 0.40}))
    # Bob's face is a 1.0 match; a protected person at 0.5 is far below: Bob's grant holds.
    far = _subject_with_template(gate, at(0.5), "protected")
    d = calibrated.check(req("face_swap", BOB))
    assert d.verdict == "allow" and d.faces[0].subject_id == bob.subject_id
    # Within the margin (0.9 vs 1.0) the protected reading wins.
    near = _subject_with_template(gate, at(0.9), "protected")
    d = calibrated.check(req("face_swap", BOB))
    assert d.verdict == "deny" and d.faces[0].subject_id == near
    gate.erase(near)
    # protected_margin=2.0 restores "any protected match above the threshold blocks".
    strict = FaceGate(gate.parts, calibrated.settings.model_copy(
        update={"protected_margin": 2.0}))
    d = strict.check(req("face_swap", BOB))
    assert d.verdict == "deny" and d.faces[0].subject_id == far


# -- core.minor_sexual read from the prompt: sexual content and a prompt that describes a
# child or someone under 18 is denied for the whole request, with or without faces, and no
# grant, self-use or policy can change that.


@pytest.mark.parametrize("prompt", [
    "nude photo of a 14 year old girl",
    "schoolgirl in lingerie",
    "未成年少女裸体",
    "desnuda, niña de 12 años",
])
def test_sexual_prompt_about_a_minor_is_denied_without_faces(fake_gate: Any,
                                                             prompt: str) -> None:
    d = fake_gate.check(req("txt2img", prompt=prompt))
    assert d.verdict == "deny"
    assert d.rule_ids[0] == "core.minor_sexual"
    assert d.reasons[0].face_ref is None
    assert d.obligations == [] and d.consent_needed == []


def test_no_grant_covers_a_prompt_that_describes_a_minor(fake_gate: FaceGate) -> None:
    """A consenting adult with a sexual-content grant: the same request is allowed, and
    denied once the prompt asks to make him look like a child."""
    bob = fake_gate.enroll([BOB], display_name="Bob", status="consenting")
    fake_gate.grant(bob.subject_id, app_id="studio", operations=["img2img"],
                    content=["general", "sexual"])
    assert fake_gate.check(req("img2img", BOB, content=["sexual"])).verdict == "allow"
    d = fake_gate.check(req("img2img", BOB, prompt="make him look 15",
                            content=["sexual"]))
    assert d.verdict == "deny"
    assert d.rule_ids == ["core.minor_sexual"]


def test_minor_prompt_with_declared_sexual_content_is_denied(fake_gate: FaceGate) -> None:
    d = fake_gate.check(req("txt2img", prompt="a teenager on a bed", content=["sexual"]))
    assert d.verdict == "deny" and "core.minor_sexual" in d.rule_ids


@pytest.mark.parametrize(("prompt", "negative", "content"), [
    ("a child's birthday party with balloons", "", ["general"]),  # not sexual
    ("a nude figure study of a woman, charcoal", "", ["general"]),  # no minor
    ("a nude figure study of a woman", "child, kid, teen", ["general"]),  # negative
])
def test_minor_prompt_rule_leaves_other_requests_alone(
        fake_gate: FaceGate, prompt: str, negative: str, content: list[str]) -> None:
    d = fake_gate.check(req("txt2img", prompt=prompt, negative=negative, content=content))
    assert "core.minor_sexual" not in d.rule_ids


def test_audit_names_the_minor_rule_never_the_prompt(fake_gate: FaceGate) -> None:
    fake_gate.check(req("txt2img", prompt="nude 13yo secretword"))
    events = [e["event"] for e in fake_gate.audit_events(0, 100)]
    assert any("core.minor_sexual" in str(e) for e in events)
    assert all("secretword" not in str(e) and "13yo" not in str(e) for e in events)
