"""``max_uses`` is exact under concurrency: 8 threads (SQLite) and 8 gates in parallel on
one PostgreSQL database hammer one grant with ``max_uses=5``; exactly 5 checks allow."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from gate.engine import FaceGate
from gate.types import GateRequest, ImageInput, Requester
from tests.conftest import noise_png
from tests.e2e.postgres import pg_url, pg_url_factory  # noqa: F401  (fixtures)

FACE = noise_png(21)
THREADS, ATTEMPTS_EACH, MAX_USES = 8, 4, 5


def _swap() -> GateRequest:
    return GateRequest(operation="face_swap", images=[ImageInput(role="target", data=FACE)],
                       requester=Requester(app_id="studio", user_id="u1"))


def _hammer(gates: list[FaceGate]) -> Counter[str]:
    barrier = threading.Barrier(THREADS)
    verdicts: list[str] = []
    lock = threading.Lock()

    def worker(i: int) -> None:
        gate = gates[i % len(gates)]
        barrier.wait()
        for _ in range(ATTEMPTS_EACH):
            verdict = gate.check(_swap()).verdict
            with lock:
                verdicts.append(verdict)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(THREADS)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=120)
    assert len(verdicts) == THREADS * ATTEMPTS_EACH
    return Counter(verdicts)


def _grant(gate: FaceGate) -> str:
    sid = gate.enroll([FACE], "Hammer", status="consenting").subject_id
    return gate.grant(sid, app_id="studio", operations=["face_swap"],
                      max_uses=MAX_USES).grant_id


def test_max_uses_exact_with_8_threads_on_sqlite(fake_gate: FaceGate) -> None:
    grant_id = _grant(fake_gate)
    verdicts = _hammer([fake_gate])
    assert verdicts["allow"] == MAX_USES, verdicts
    assert fake_gate.parts.store.get_grant(grant_id).uses == MAX_USES  # type: ignore[union-attr]


def test_max_uses_exact_with_8_gates_on_one_sqlite_file(tmp_path: Path) -> None:
    gates = [FaceGate.open(tmp_path / "d", detector="fake", embedder="fake",
                           match_threshold=0.9) for _ in range(THREADS)]
    try:
        grant_id = _grant(gates[0])
        verdicts = _hammer(gates)
        assert verdicts["allow"] == MAX_USES, verdicts
        assert gates[0].parts.store.get_grant(grant_id).uses == MAX_USES  # type: ignore[union-attr]
    finally:
        for g in gates:
            g.close()


@pytest.mark.postgres
@pytest.mark.slow
def test_max_uses_exact_with_8_gates_on_postgres(tmp_path: Path,
                                                 pg_url_factory: Callable[[], str]) -> None:  # noqa: F811
    url = pg_url_factory()
    gates = [FaceGate.open(tmp_path / "d", detector="fake", embedder="fake",
                           match_threshold=0.9, database_url=url) for _ in range(THREADS)]
    try:
        grant_id = _grant(gates[0])
        verdicts = _hammer(gates)  # 8 gates = 8 connection pools, one use counter row
        assert verdicts["allow"] == MAX_USES, verdicts
        assert gates[0].parts.store.get_grant(grant_id).uses == MAX_USES  # type: ignore[union-attr]
    finally:
        for g in gates:
            g.close()
