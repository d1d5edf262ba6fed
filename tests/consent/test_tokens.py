"""Signed grants: issue, verify offline, refuse with a precise code; the keyring; the
revocation list's epochs and its fail-closed staleness bound."""

from __future__ import annotations

import base64
import json
import stat
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from joserfc import jws
from joserfc.jwk import OKPKey

from gate.consent.offline import (
    GrantNeedsOnlineCheck,
    GrantNotCovering,
    GrantRevoked,
    OfflineGrantVerifier,
    RevocationList,
    RevocationListStale,
    RevocationPage,
    TokenExpired,
    TokenInvalid,
    TokenNotYetValid,
    TokenUnknownKey,
    TokenWrongAudience,
    verify_grant_token,
)
from gate.consent.service import ConsentService
from gate.consent.tokens import SigningKeyring
from gate.engine import FaceGate
from gate.errors import ConsentError
from gate.types import GateRequest, ImageInput, Requester
from tests.conftest import noise_png

ALICE = noise_png(11)
NOW = datetime.now(UTC)


def enrol(gate: FaceGate, image: bytes = ALICE) -> str:
    return gate.enroll([image], "Alice", status="consenting").subject_id


def swap(image: bytes = ALICE, app: str = "studio") -> GateRequest:
    return GateRequest(operation="face_swap", images=[ImageInput(role="target", data=image)],
                       requester=Requester(app_id=app, user_id="u1"))


def feed(svc: ConsentService, app: str = "studio"):  # type: ignore[no-untyped-def]
    def fetch(since: int) -> RevocationPage:
        page = svc.revocations(app, since)
        return RevocationPage(page.epoch, tuple(r["grant_id"] for r in page.revoked), page.more)
    return fetch


def _b64json(part: str) -> dict:
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


def test_grant_carries_a_token_that_verifies_offline(svc: ConsentService,
                                                     fake_gate: FaceGate) -> None:
    sid = enrol(fake_gate)
    until = NOW + timedelta(days=2)
    grant = svc.lifecycle.grant(sid, app_id="studio", operations=["face_swap", "edit"],
                      user_id="u1", purpose="birthday card", expires_at=until, max_uses=3)
    assert grant.token is not None
    header, payload, _ = grant.token.split(".")
    assert _b64json(header) == {"alg": "Ed25519", "kid": svc.tokens.keyring.active_kid,
                                "typ": "gate-grant+jwt"}
    claims = verify_grant_token(grant.token, jwks=svc.jwks(), app_id="studio")
    assert (claims.sub, claims.gid, claims.aud, claims.uid) == (sid, grant.grant_id, "studio", "u1")
    assert claims.ops == ("face_swap", "edit") and claims.content == ("general",)
    assert claims.purpose == "birthday card" and claims.max_uses == 3
    assert claims.exp == int(until.timestamp()) and claims.nbf == claims.iat
    assert set(_b64json(payload)) == {"sub", "gid", "aud", "uid", "ops", "content", "purpose",
                                      "nbf", "exp", "iat", "max_uses"}
    assert claims.covers(operation="edit", content=["general"], user_id="u1",
                         purpose="birthday card")
    assert not claims.covers(operation="edit", content=["sexual"], user_id="u1",
                             purpose="birthday card")
    assert not claims.covers(operation="edit", content=["general"], user_id="u2",
                             purpose="birthday card")
    # the stored grant has no token column; the returned copy carries it
    assert fake_gate.parts.store.get_grant(grant.grant_id).token is None  # type: ignore[union-attr]


def test_token_life_is_capped_for_grants_without_expiry(svc: ConsentService,
                                                        fake_gate: FaceGate) -> None:
    grant = svc.lifecycle.grant(enrol(fake_gate), app_id="studio", operations=["face_swap"])
    claims = verify_grant_token(grant.token or "", jwks=svc.jwks(), app_id="studio")
    assert claims.exp - claims.iat == fake_gate.settings.consent_token_ttl_s


@pytest.mark.parametrize("mutate", ["payload", "signature", "header"])
def test_tampered_token_is_refused(svc: ConsentService, fake_gate: FaceGate,
                                   mutate: str) -> None:
    grant = svc.lifecycle.grant(enrol(fake_gate), app_id="studio", operations=["face_swap"])
    token = grant.token or ""
    header, payload, sig = token.split(".")
    if mutate == "payload":
        body = _b64json(payload)
        body["ops"] = ["face_swap", "nudify"]
        payload = base64.urlsafe_b64encode(json.dumps(body).encode()).decode().rstrip("=")
    elif mutate == "signature":
        sig = ("A" if sig[0] != "A" else "B") + sig[1:]
    else:
        h = _b64json(header)
        h["typ"] = "JWT"
        header = base64.urlsafe_b64encode(json.dumps(h).encode()).decode().rstrip("=")
    with pytest.raises(TokenInvalid) as err:
        verify_grant_token(".".join([header, payload, sig]), jwks=svc.jwks(), app_id="studio")
    assert err.value.code == "token_invalid"
    assert token not in str(err.value)


@pytest.mark.parametrize("bad", ["", "a.b", "a.b.c", "x" * 9000, "....", "e30.e30.e30"])
def test_malformed_tokens_are_refused(svc: ConsentService, bad: str) -> None:
    with pytest.raises(TokenInvalid):
        verify_grant_token(bad, jwks=svc.jwks(), app_id="studio")


def test_refusal_codes(svc: ConsentService, fake_gate: FaceGate) -> None:
    sid = enrol(fake_gate)
    grant = svc.lifecycle.grant(sid, app_id="studio", operations=["face_swap"],
                      not_before=NOW + timedelta(hours=1), expires_at=NOW + timedelta(hours=2))
    token = grant.token or ""
    jwks = svc.jwks()
    with pytest.raises(TokenWrongAudience):
        verify_grant_token(token, jwks=jwks, app_id="other", now=NOW + timedelta(minutes=90))
    with pytest.raises(TokenNotYetValid):
        verify_grant_token(token, jwks=jwks, app_id="studio", now=NOW)
    with pytest.raises(TokenExpired):
        verify_grant_token(token, jwks=jwks, app_id="studio", now=NOW + timedelta(hours=3))
    assert verify_grant_token(token, jwks=jwks, app_id="studio",
                              now=NOW + timedelta(minutes=90)).gid == grant.grant_id
    other = SigningKeyring(svc.tokens.keyring.path.with_name("other.jwk"))
    with pytest.raises(TokenUnknownKey) as err:
        verify_grant_token(token, jwks=other.jwks(), app_id="studio")
    assert err.value.code == "token_unknown_key"
    # a key with the right id but other bytes: the signature does not verify
    forged = {"keys": [{**other.jwks()["keys"][0], "kid": svc.tokens.keyring.active_kid}]}
    with pytest.raises(TokenInvalid) as err2:
        verify_grant_token(token, jwks=forged, app_id="studio", now=NOW + timedelta(minutes=90))
    assert err2.value.code == "token_invalid"


def test_eddsa_header_name_also_verifies(tmp_path: Path) -> None:
    ring = SigningKeyring(tmp_path / "k.jwk")
    key = OKPKey.import_key(json.loads(ring.path.read_text())["keys"][0])
    claims = {"sub": "s", "gid": "g", "aud": "a", "uid": None, "ops": ["edit"],
              "content": ["general"], "purpose": None, "nbf": 0, "exp": 2**40, "iat": 0,
              "max_uses": None}
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        token = jws.serialize_compact({"alg": "EdDSA", "kid": ring.active_kid},
                                      json.dumps(claims).encode(), key, algorithms=["EdDSA"])
    assert verify_grant_token(token, jwks=ring.jwks(), app_id="a").gid == "g"


def test_keyring_file_rotation_and_retirement(svc: ConsentService, fake_gate: FaceGate) -> None:
    path = svc.tokens.keyring.path
    assert path == fake_gate.settings.resolved_key_file().parent / "signing.jwk"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    sid = enrol(fake_gate)
    old = svc.lifecycle.grant(sid, app_id="studio", operations=["face_swap"]).token or ""
    old_kid = svc.tokens.keyring.active_kid
    new_kid = svc.tokens.rotate_signing_key()
    assert new_kid != old_kid and svc.tokens.keyring.kids() == [new_kid, old_kid]
    new = svc.lifecycle.grant(sid, app_id="studio", operations=["edit"]).token or ""
    jwks = svc.jwks()
    assert [k["kid"] for k in jwks["keys"]] == [new_kid, old_kid]
    assert all("d" not in k for k in jwks["keys"])  # never the private part
    assert verify_grant_token(old, jwks=jwks, app_id="studio").kid == old_kid
    assert verify_grant_token(new, jwks=jwks, app_id="studio").kid == new_kid
    reloaded = SigningKeyring(path)  # another process sees the same ring
    assert reloaded.kids() == [new_kid, old_kid]
    assert reloaded.retire(keep=1) == [old_kid]
    with pytest.raises(TokenUnknownKey):
        verify_grant_token(old, jwks=reloaded.jwks(), app_id="studio")


def test_revocation_list_learns_revocations_and_erasures(svc: ConsentService,
                                                         fake_gate: FaceGate) -> None:
    alice, bob = enrol(fake_gate), enrol(fake_gate, noise_png(12))
    g1 = svc.lifecycle.grant(alice, app_id="studio", operations=["face_swap"])
    g2 = svc.lifecycle.grant(bob, app_id="studio", operations=["face_swap"])
    g3 = svc.lifecycle.grant(alice, app_id="other", operations=["face_swap"])
    revocations = RevocationList(feed(svc))
    revocations.refresh()
    assert revocations.epoch == 0 and not revocations.is_revoked(g1.grant_id)
    svc.lifecycle.revoke(g1.grant_id)
    svc.lifecycle.erase(bob)  # erasure deletes the grant row; its token must die too
    svc.lifecycle.revoke(g3.grant_id)  # another app's revocation is not in studio's list
    assert revocations.refresh() == 2
    assert revocations.is_revoked(g1.grant_id) and revocations.is_revoked(g2.grant_id)
    assert not revocations.is_revoked(g3.grant_id)
    reasons = {r["grant_id"]: r["reason"] for r in svc.revocations("studio", 0).revoked}
    assert reasons == {g1.grant_id: "revoked", g2.grant_id: "erased"}
    # incremental: nothing new after the epoch we hold
    page = svc.revocations("studio", revocations.epoch)
    assert page.revoked == [] and page.epoch == revocations.epoch


def test_revocation_feed_pages_and_pruning(svc: ConsentService, fake_gate: FaceGate) -> None:
    sid = enrol(fake_gate)
    grants = [svc.lifecycle.grant(sid, app_id="studio", operations=["face_swap"],
                        expires_at=NOW + timedelta(hours=1 + i)) for i in range(5)]
    for g in grants:
        svc.lifecycle.revoke(g.grant_id)
    first = svc.revocations("studio", 0, limit=2)
    assert first.more and len(first.revoked) == 2
    revocations = RevocationList(feed(svc))
    revocations.refresh()
    assert all(revocations.is_revoked(g.grant_id) for g in grants)
    head = revocations.epoch
    # entries whose tokens expired are pruned, but the newest stays: the epoch never drops
    assert svc.tokens.prune(NOW + timedelta(days=1)) == 4
    assert svc.revocations("studio", 0).epoch == head


def test_stale_revocation_list_fails_closed() -> None:
    clock = [100.0]
    pages = [RevocationPage(3, ("gr_x",))]
    revocations = RevocationList(lambda since: pages[0], max_staleness_s=5.0,
                                 poll_interval_s=1.0, clock=lambda: clock[0])
    with pytest.raises(RevocationListStale):  # never refreshed
        revocations.is_revoked("gr_y")
    revocations.refresh()
    assert revocations.is_revoked("gr_x") and not revocations.is_revoked("gr_y")
    clock[0] += 5.0
    assert not revocations.is_revoked("gr_y")
    clock[0] += 0.01
    with pytest.raises(RevocationListStale) as err:
        revocations.is_revoked("gr_y")
    assert err.value.code == "revocation_list_stale"


def test_background_poll_keeps_fresh_and_failures_make_it_stale() -> None:
    calls: list[int] = []
    broken = [False]

    def fetch(since: int) -> RevocationPage:
        calls.append(since)
        if broken[0]:
            raise OSError("sidecar down")
        return RevocationPage(since, ())

    with RevocationList(fetch, max_staleness_s=0.3, poll_interval_s=0.05) as revocations:
        time.sleep(0.2)
        assert not revocations.is_revoked("gr_a")
        broken[0] = True
        time.sleep(0.5)
        with pytest.raises(RevocationListStale):
            revocations.is_revoked("gr_a")
    assert len(calls) >= 4


def test_offline_verifier(svc: ConsentService, fake_gate: FaceGate) -> None:
    sid = enrol(fake_gate)
    plain = svc.lifecycle.grant(sid, app_id="studio", operations=["face_swap"])
    counted = svc.lifecycle.grant(sid, app_id="studio", operations=["face_swap"], max_uses=2)
    revocations = RevocationList(feed(svc))
    revocations.refresh()
    verifier = OfflineGrantVerifier(svc.jwks(), revocations, "studio")
    assert verifier.verify(plain.token or "", operation="face_swap").gid == plain.grant_id
    with pytest.raises(GrantNotCovering):
        verifier.verify(plain.token or "", operation="nudify")
    with pytest.raises(GrantNeedsOnlineCheck):
        verifier.verify(counted.token or "", operation="face_swap")
    with pytest.raises(TokenWrongAudience):
        OfflineGrantVerifier(svc.jwks(), revocations, "other").verify(
            plain.token or "", operation="face_swap")
    svc.lifecycle.revoke(plain.grant_id)
    revocations.refresh()
    with pytest.raises(GrantRevoked):
        verifier.verify(plain.token or "", operation="face_swap")


def test_used_up_grants_reach_the_feed(svc: ConsentService, fake_gate: FaceGate) -> None:
    sid = enrol(fake_gate)
    grant = svc.lifecycle.grant(sid, app_id="studio", operations=["face_swap"], max_uses=1)
    assert fake_gate.check(swap()).verdict == "allow"
    assert fake_gate.check(swap()).verdict != "allow"
    svc.tokens.sync(fake_gate.parts.store.epoch(), force=True)
    assert svc.revocations("studio", 0).revoked == [
        {"grant_id": grant.grant_id, "epoch": 1, "reason": "used_up"}]


def test_grant_revoke_round_trip_and_check(svc: ConsentService, fake_gate: FaceGate) -> None:
    sid = enrol(fake_gate)
    grant = svc.lifecycle.grant(sid, app_id="studio", operations=["face_swap"])
    assert fake_gate.check(swap()).verdict == "allow"
    svc.lifecycle.revoke(grant.grant_id)
    assert fake_gate.check(swap()).verdict == "needs_consent"
    with pytest.raises(ConsentError, match="revoked"):
        svc.lifecycle.token_for(grant.grant_id)
