"""A process that changes consent as fast as it can and reports each change that returned.

Run by ``test_kill.py``, which SIGKILLs it at random moments. Every line it prints is a
promise: that operation returned success, so it must survive the crash. ``intent`` lines
announce an erasure or revocation about to start: if the kill lands inside it, it may
or may not have taken effect, and the checker accepts both.
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

from gate.engine import FaceGate
from gate.types import GateRequest, ImageInput, Requester
from tests.conftest import noise_png


def report(**event: object) -> None:
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


def main(data_dir: str, database_url: str, seed: int) -> None:
    rng = random.Random(seed)
    gate = FaceGate.open(Path(data_dir), detector="fake", embedder="fake",
                         database_url=database_url, analysis_cache_items=0)
    live_grants: list[str] = []
    subjects: list[str] = []
    n = seed * 10_000
    while True:
        n += 1
        op = rng.choice(["enroll", "grant", "grant", "revoke", "erase", "check"])
        if op == "enroll" or not subjects:
            s = gate.enroll([noise_png(n)], display_name=f"p{n}", status="consenting")
            subjects.append(s.subject_id)
            report(op="enroll", subject_id=s.subject_id, seed=n)
        elif op == "grant":
            g = gate.grant(rng.choice(subjects), app_id="studio", operations=["face_swap"])
            live_grants.append(g.grant_id)
            report(op="grant", grant_id=g.grant_id, subject_id=g.subject_id)
        elif op == "revoke" and live_grants:
            gid = live_grants.pop(rng.randrange(len(live_grants)))
            report(op="intent", grant_id=gid)
            gate.revoke(gid)
            report(op="revoke", grant_id=gid)
        elif op == "erase" and len(subjects) > 1:
            sid = subjects.pop(rng.randrange(len(subjects)))
            report(op="intent", subject_id=sid)  # in flight: may or may not land
            gate.erase(sid)
            report(op="erase", subject_id=sid)
        else:
            d = gate.check(GateRequest(operation="face_swap", requester=Requester(
                app_id="studio", user_id="u"), images=[ImageInput(role="target",
                                                                  data=noise_png(n - 1))]))
            report(op="check", verdict=d.verdict, request_id=d.request_id)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
