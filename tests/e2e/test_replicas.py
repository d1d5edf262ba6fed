"""Two uvicorn replicas on one PostgreSQL behave as one service: a revocation through
replica A is refused by replica B on its very next request, keys and subjects are shared,
and concurrent decisions on both replicas keep one valid audit hash chain."""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from gate.api.keys import KeyStore
from gate.client import GateClient, HttpError
from gate.db import make_engine
from gate.db.migrate import head_revision, upgrade
from gate.types import Decision, GateRequest, ImageInput, Requester
from tests.conftest import noise_png
from tests.e2e.conftest import FAKE_MODELS, Server, create_key

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

BOB = noise_png(2)
PROPAGATION_ROUNDS = 20


def swap(image: bytes) -> GateRequest:
    return GateRequest(operation="face_swap", images=[ImageInput(role="target", data=image)],
                       requester=Requester(app_id="ignored", user_id="u1"))


def eventually_allowed(client: GateClient, within_s: float = 5.0) -> Decision:
    """B's decision must become allow. It is at once unless the machine is so loaded
    that a database call fails and the engine fails closed (a deny, never an allow)."""
    deadline = time.monotonic() + within_s
    while True:
        decision = client.check(swap(BOB))
        if decision.verdict == "allow" or time.monotonic() > deadline:
            assert decision.verdict == "allow", decision.reasons
            return decision
        assert decision.rule_ids == ["core.fail_closed"], decision.reasons
        time.sleep(0.1)


def start_pair(tmp_path: Path, pg_url: str,
               servers: Callable[..., Server]) -> tuple[Server, Server]:
    assert upgrade(pg_url) == head_revision()  # what compose's migrate job does
    env = {**FAKE_MODELS, "GATE_DATABASE_URL": pg_url,
           "GATE_KEY_FILE": str(tmp_path / "shared-keys" / "template.key"),
           "GATE_API_RATE_LIMIT_PER_S": "0"}
    a = servers(tmp_path / "replica-a", env)  # creates the shared keys
    b = servers(tmp_path / "replica-b", env)
    return a, b


def test_revocation_through_a_is_refused_by_b(tmp_path: Path, pg_url: str,
                                              servers: Callable[..., Server]) -> None:
    a, b = start_pair(tmp_path, pg_url, servers)
    admin_key, app_key = create_key(pg_url, "ops", ["admin"]), create_key(pg_url, "studio",
                                                                          ["check"])
    admin_a, admin_b = GateClient(a.url, admin_key), GateClient(b.url, admin_key)
    app_a, app_b = GateClient(a.url, app_key), GateClient(b.url, app_key)
    try:
        _revocation_rounds(admin_a, admin_b, app_a, app_b, pg_url, app_key)
    finally:
        for c in (admin_a, admin_b, app_a, app_b):
            c.close()


def _revocation_rounds(admin_a: GateClient, admin_b: GateClient, app_a: GateClient,
                       app_b: GateClient, pg_url: str, app_key: str) -> None:
    bob = admin_a.enroll([BOB], display_name="Bob", status="consenting")
    delays_ms: list[float] = []
    for _ in range(PROPAGATION_ROUNDS):
        grant = admin_a.grant(bob.subject_id, app_id="studio", operations=["face_swap"])
        # B sees the enrolment and the grant made through A
        assert eventually_allowed(app_b).faces[0].grant_id == grant.grant_id
        admin_a.revoke(grant.grant_id)
        revoked_at = time.perf_counter()
        decision = app_b.check(swap(BOB))  # B's very next request
        delays_ms.append((time.perf_counter() - revoked_at) * 1000)
        assert decision.verdict != "allow", "replica B allowed a grant revoked through A"
    print(f"\nrevocation A->B: next request on B refused in {PROPAGATION_ROUNDS}/"
          f"{PROPAGATION_ROUNDS} rounds; revoke-return to B-decision p50 "
          f"{statistics.median(delays_ms):.1f} ms, max {max(delays_ms):.1f} ms")

    # erasure through B: A forgets the subject at once
    admin_b.erase(bob.subject_id)
    d = app_a.check(swap(BOB))
    assert d.faces[0].subject_id is None

    # key revocation is shared too (no per-replica key cache)
    store = KeyStore(make_engine(pg_url))
    key_id = app_key.split("_")[1]
    store.revoke(key_id)
    store.close()
    with pytest.raises(HttpError) as refused:
        app_b.check(swap(BOB))
    assert refused.value.status == 401


def test_concurrent_decisions_on_both_replicas_keep_one_audit_chain(
        tmp_path: Path, pg_url: str, servers: Callable[..., Server]) -> None:
    a, b = start_pair(tmp_path, pg_url, servers)
    admin_key, app_key = create_key(pg_url, "ops", ["admin"]), create_key(pg_url, "studio",
                                                                          ["check"])
    clients = [GateClient(s.url, app_key) for s in (a, b)]
    per_worker, workers = 15, 8

    def work(n: int) -> int:
        client = clients[n % 2]
        for i in range(per_worker):
            client.check(swap(noise_png(100 + (n * per_worker + i) % 7)))
        return per_worker

    with ThreadPoolExecutor(workers) as pool:
        done = sum(pool.map(work, range(workers)))
    with GateClient(b.url, admin_key) as admin:
        verification = admin.verify_audit()
        events = admin.audit_events(limit=1000)
    for c in clients:
        c.close()
    assert verification.ok, verification
    assert len([e for e in events if e["event"]["kind"] == "check"]) == done == \
        per_worker * workers
    assert [e["seq"] for e in events] == list(range(1, verification.events + 1))


def test_a_late_committing_enrolment_is_not_skipped(tmp_path: Path, pg_url: str) -> None:
    from datetime import UTC, datetime

    from sqlalchemy import insert

    from gate import db
    from gate.consent.store import SqlConsentStore
    from gate.engine import FaceGate

    opts = {"detector": "fake", "embedder": "fake", "match_threshold": 0.9,
            "database_url": pg_url, "analysis_cache_items": 0,
            "key_file": tmp_path / "keys" / "template.key"}
    a = FaceGate.open(tmp_path / "a", **opts)
    b = FaceGate.open(tmp_path / "b", **opts)
    engine = db.make_engine(pg_url)
    face = noise_png(7)
    request = GateRequest(operation="img2img", images=[ImageInput(role="init", data=face)],
                          requester=Requester(app_id="studio"))
    try:
        found = a.largest_face_vector(face)
        assert found is not None
        blob = a.parts.cipher.encrypt(found[0], subject_id="sub_slow",
                                      pack_id=a.parts.embedder.pack_id)
        now = datetime.now(UTC)
        with engine.connect() as conn:
            slow = conn.begin()  # an enrolment that has its feed seq but commits late
            conn.execute(insert(db.subjects).values(
                subject_id="sub_slow", display_name="Slow", status="protected", aliases=[],
                guardian=False, model_pack=a.parts.embedder.pack_id, created_at=now,
                updated_at=now))
            conn.execute(insert(db.templates).values(
                subject_id="sub_slow", model_pack=a.parts.embedder.pack_id,
                key_id=a.parts.cipher.key_id, ciphertext=blob, created_at=now))
            SqlConsentStore._record(conn, "subject_add", "sub_slow")  # the feed append
            enrolled: list[str] = []
            writer = threading.Thread(target=lambda: enrolled.append(
                a.enroll([noise_png(8)], display_name="Other").subject_id))
            writer.start()  # another replica's enrolment: commits a higher seq, unless
            writer.join(1.0)  # feed appends are serialised (then it waits for ours)
            b.check(request)  # B reads the feed while our seq is still uncommitted
            slow.commit()
            writer.join(10)
        assert enrolled
        decision = b.check(request)
        assert decision.faces[0].subject_id == "sub_slow"
        assert decision.verdict == "deny"
    finally:
        engine.dispose()
        a.close()
        b.close()
