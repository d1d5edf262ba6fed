"""A sidecar for the staleness measurement: uvicorn serving the consent router over a
fake-model gate. ``python -m tests.consent.sidecar DATA_DIR PORT``."""

from __future__ import annotations

import sys

import uvicorn

import gate.consent.tables  # noqa: F401
from gate.consent.config import ConsentConfig
from gate.consent.service import ConsentService
from gate.engine import FaceGate
from tests.consent.conftest import tiny_app


def main() -> None:
    data_dir, port = sys.argv[1], int(sys.argv[2])
    gate = FaceGate.open(data_dir, detector="fake", embedder="fake", match_threshold=0.9)
    svc = ConsentService(gate, ConsentConfig(secure_cookies=False,
                                             public_url=f"http://127.0.0.1:{port}"))
    uvicorn.run(tiny_app(gate, svc), host="127.0.0.1", port=port, log_level="warning")


if __name__ == "__main__":
    main()
