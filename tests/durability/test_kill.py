"""SIGKILL a process mid-way through consent changes, many times; nothing it reported is lost.

After each kill: every enrolment, grant, revocation and erasure that returned success is
in the store; no revoked grant allows; the audit chain verifies.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from gate.engine import FaceGate
from gate.types import GateRequest, ImageInput, Requester
from tests.conftest import REPO, noise_png

ITERATIONS_SQLITE = int(os.environ.get("GATE_KILL_ITERATIONS", "12"))
ITERATIONS_PG = int(os.environ.get("GATE_KILL_ITERATIONS_PG", "6"))
PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def _run_and_kill(data_dir: Path, url: str, seed: int, rng: random.Random) -> list[dict]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.durability.worker", str(data_dir), url, str(seed)],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert proc.stdout is not None
    deadline = time.monotonic() + 30
    lines: list[dict] = []
    want = rng.randint(3, 25)
    while len(lines) < want and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(json.loads(line))
    time.sleep(rng.random() * 0.05)  # kill somewhere inside the next operation
    proc.send_signal(signal.SIGKILL)
    rest, _ = proc.communicate()
    lines += [json.loads(x) for x in rest.splitlines() if x.strip().endswith("}")]
    return lines


def _verify(data_dir: Path, url: str, promised: list[dict]) -> None:
    gate = FaceGate.open(data_dir, detector="fake", embedder="fake", database_url=url,
                         analysis_cache_items=0)
    try:
        erased = {e["subject_id"] for e in promised if e["op"] == "erase"}
        maybe_erased = {e["subject_id"] for e in promised
                        if e["op"] == "intent" and "subject_id" in e}
        enrolled = {e["subject_id"]: e["seed"] for e in promised if e["op"] == "enroll"}
        existing = {s.subject_id for s in gate.list_subjects()}
        assert set(enrolled) - erased - maybe_erased <= existing, "an enrolment was lost"
        assert not (erased & existing), "an acknowledged erasure was undone"
        revoked = {e["grant_id"] for e in promised if e["op"] == "revoke"}
        grants = {g.grant_id: g for g in gate.list_grants()}
        for e in promised:
            if e["op"] == "grant" and e["subject_id"] not in erased | maybe_erased:
                assert e["grant_id"] in grants, "an acknowledged grant was lost"
        for gid in revoked:
            assert gid not in grants or grants[gid].revoked_at is not None, "revocation lost"
        for sid, seed in enrolled.items():
            if sid in erased:
                continue
            d = gate.check(GateRequest(operation="face_swap", images=[
                ImageInput(role="target", data=noise_png(seed))],
                requester=Requester(app_id="studio", user_id="u")))
            if d.verdict == "allow":
                assert d.faces[0].grant_id not in revoked, "a revoked grant allowed"
        audit = gate.verify_audit()
        assert audit.ok, audit.problem
    finally:
        gate.close()


def _kill_loop(data_dir: Path, url: str, iterations: int) -> None:
    rng = random.Random(20261125)
    promised: list[dict] = []
    for i in range(iterations):
        promised += _run_and_kill(data_dir, url, i + 1, rng)
        _verify(data_dir, url, promised)
    assert sum(e["op"] != "check" for e in promised) > iterations  # it really did work


@pytest.mark.slow
def test_sigkill_loses_nothing_sqlite(tmp_path: Path) -> None:
    _kill_loop(tmp_path, "", ITERATIONS_SQLITE)


@pytest.fixture
def pg_url() -> Iterator[str]:
    sqlalchemy = pytest.importorskip("sqlalchemy")
    name = f"gate_kill_{uuid.uuid4().hex[:10]}"
    admin = sqlalchemy.create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f"CREATE DATABASE {name}")
    except Exception as exc:
        admin.dispose()
        if os.environ.get("GATE_REQUIRE_POSTGRES") == "1":
            raise
        pytest.skip(f"PostgreSQL unavailable: {type(exc).__name__}")
    yield PG_ADMIN.rsplit("/", 1)[0] + "/" + name
    with admin.connect() as conn:
        conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    admin.dispose()


@pytest.mark.slow
@pytest.mark.postgres
def test_sigkill_loses_nothing_postgres(tmp_path: Path, pg_url: str) -> None:
    _kill_loop(tmp_path, pg_url, ITERATIONS_PG)
