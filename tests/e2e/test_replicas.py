"""Two uvicorn replicas on one PostgreSQL behave as one service: a revocation through
replica A is refused by replica B on its very next request, keys and subjects are shared,
and concurrent decisions on both replicas keep one valid audit hash chain."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from gate.api.keys import KeyStore
from gate.api.migrate import upgrade
from gate.client import GateClient, HttpError
from gate.db import make_engine
from gate.types import GateRequest, ImageInput, Requester
from tests.conftest import noise_png
from tests.e2e.conftest import FAKE_MODELS, Server, create_key

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

BOB = noise_png(2)
PROPAGATION_ROUNDS = 20


def swap(image: bytes) -> GateRequest:
    return GateRequest(operation="face_swap", images=[ImageInput(role="target", data=image)],
                       requester=Requester(app_id="ignored", user_id="u1"))


def start_pair(tmp_path: Path, pg_url: str,
               servers: Callable[..., Server]) -> tuple[Server, Server]:
    assert upgrade(pg_url) == "0001"  # what compose's migrate job does
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
        assert app_b.check(swap(BOB)).verdict == "allow"  # B sees A's enrolment and grant
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
