"""Measured: how long after a revocation an SDK verifying grant tokens offline still
accepts the grant, with the revocation list polled from a sidecar (uvicorn, another
process); and that a list staler than its bound fails closed. Prints the figures."""

from __future__ import annotations

import os
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from gate.api.keys import KeyStore
from gate.consent.config import ConsentConfig
from gate.consent.offline import (
    GrantRevoked,
    JwksCache,
    OfflineGrantVerifier,
    RevocationList,
    RevocationListStale,
    SidecarFeed,
)
from gate.consent.service import ConsentService
from gate.db import make_engine
from gate.engine import FaceGate
from tests.conftest import REPO, noise_png
from tests.e2e.conftest import free_port

pytestmark = pytest.mark.slow
ROUNDS = int(os.environ.get("GATE_STALENESS_ROUNDS", "15"))


@pytest.fixture
def sidecar(tmp_path: Path) -> Iterator[tuple[str, Path, subprocess.Popen[bytes]]]:
    data = tmp_path / "data"
    FaceGate.open(data, detector="fake", embedder="fake").close()  # schema and keys
    port = free_port()
    log = (tmp_path / "sidecar.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "tests.consent.sidecar", str(data),
                             str(port)], cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/.well-known/jwks.json", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            time.sleep(0.1)
    else:
        proc.kill()
        pytest.fail((tmp_path / "sidecar.log").read_text()[-2000:])
    yield url, data, proc
    if proc.poll() is None:
        proc.terminate()
        proc.wait(10)
    log.close()


def _ms(values: list[float]) -> str:
    q = statistics.quantiles(values, n=20, method="inclusive") if len(values) >= 2 else values
    return (f"median {statistics.median(values):.1f} ms, p95 {q[-1]:.1f} ms, "
            f"max {max(values):.1f} ms (n={len(values)})")


def test_revocation_staleness_sidecar_to_sdk(sidecar: tuple[str, Path, subprocess.Popen[bytes]],
                                             capsys: pytest.CaptureFixture[str]) -> None:
    url, data, proc = sidecar
    gate = FaceGate.open(data, detector="fake", embedder="fake", match_threshold=0.9)
    svc = ConsentService(gate, ConsentConfig(secure_cookies=False))  # the "portal" replica
    keys = KeyStore(make_engine(gate.settings.resolved_database_url()))
    app_key = keys.create("studio", ["check"]).token
    sid = gate.enroll([noise_png(61)], "Measured", status="consenting").subject_id
    figures: dict[str, str] = {}
    try:
        for poll_s in (1.0, 0.25):
            feed = SidecarFeed(url, app_key)
            revocations = RevocationList(feed.revocations, max_staleness_s=5.0,
                                         poll_interval_s=poll_s).start()
            verifier = OfflineGrantVerifier(JwksCache(feed.jwks), revocations, "studio")
            grant_ms, verify_us, revoke_ms, stale_ms = [], [], [], []
            try:
                while revocations.age_s() > 5:
                    time.sleep(0.01)
                for _ in range(ROUNDS):
                    t0 = time.perf_counter()
                    grant = svc.lifecycle.grant(sid, app_id="studio", operations=["face_swap"])
                    grant_ms.append((time.perf_counter() - t0) * 1000)
                    t0 = time.perf_counter()
                    verifier.verify(grant.token or "", operation="face_swap")
                    verify_us.append((time.perf_counter() - t0) * 1e6)
                    time.sleep(random.uniform(0, poll_s))  # revoke at a random poll phase
                    t0 = time.perf_counter()
                    svc.lifecycle.revoke(grant.grant_id)
                    revoked_at = time.perf_counter()
                    revoke_ms.append((revoked_at - t0) * 1000)
                    while True:
                        try:
                            verifier.verify(grant.token or "", operation="face_swap")
                        except GrantRevoked:
                            break
                        assert time.perf_counter() - revoked_at < poll_s + 2.0
                        time.sleep(0.002)
                    stale_ms.append((time.perf_counter() - revoked_at) * 1000)
            finally:
                revocations.stop()
                feed.close()
            assert max(stale_ms) < (poll_s + 1.0) * 1000
            figures[f"staleness, poll {poll_s:g} s"] = _ms(stale_ms)
            if poll_s == 1.0:
                figures["grant + sign (SQLite, in-process)"] = _ms(grant_ms)
                figures["revoke + feed update"] = _ms(revoke_ms)
                figures["offline verify (us)"] = (
                    f"median {statistics.median(verify_us):.0f} us, max {max(verify_us):.0f} us")

        # fail closed: the sidecar goes away, the list ages past its bound, tokens refused
        grant = svc.lifecycle.grant(sid, app_id="studio", operations=["face_swap"])
        feed = SidecarFeed(url, app_key)
        revocations = RevocationList(feed.revocations, max_staleness_s=1.0,
                                     poll_interval_s=0.2).start()
        verifier = OfflineGrantVerifier(svc.jwks(), revocations, "studio")
        try:
            time.sleep(0.5)
            verifier.verify(grant.token or "", operation="face_swap")
            proc.terminate()
            proc.wait(10)
            time.sleep(1.3)
            with pytest.raises(RevocationListStale):
                verifier.verify(grant.token or "", operation="face_swap")
        finally:
            revocations.stop()
            feed.close()
    finally:
        keys.close()
        svc.close()
        gate.close()
    with capsys.disabled():
        print("\nconsent token figures (2 cores, SQLite, loopback):")
        for name, value in figures.items():
            print(f"  {name}: {value}")
