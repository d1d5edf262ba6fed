"""End-to-end fixtures: real ``uvicorn`` servers (``python -m gate.api.cli serve``) in
subprocesses on free loopback ports, on SQLite or on a throwaway PostgreSQL database."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from gate.api.keys import KeyStore
from gate.db import make_engine
from tests.conftest import REPO
from tests.e2e.postgres import pg_url, pg_url_factory  # noqa: F401  (fixtures)

FAKE_MODELS = {"GATE_DETECTOR": "fake", "GATE_EMBEDDER": "fake", "GATE_MATCH_THRESHOLD": "0.9"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    url: str
    proc: subprocess.Popen[bytes]
    log: Path

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]


def start_server(data_dir: Path, env: dict[str, str] | None = None,
                 ready_timeout_s: float = 90.0) -> Server:
    port = free_port()
    data_dir.mkdir(parents=True, exist_ok=True)
    log = data_dir / f"server-{port}.log"
    full_env = {**os.environ, "PYTHONPATH": str(REPO), "GATE_DATA_DIR": str(data_dir),
                **(env or {})}
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gate.api.cli", "serve", "--host", "127.0.0.1",
             "--port", str(port), "--data-dir", str(data_dir)],
            cwd=REPO, env=full_env, stdout=out, stderr=subprocess.STDOUT)
    server = Server(f"http://127.0.0.1:{port}", proc, log)
    deadline = time.monotonic() + ready_timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"server exited with {proc.returncode}:\n{server.log_tail()}")
        try:
            if httpx.get(f"{server.url}/readyz", timeout=2).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    server.stop()
    pytest.fail(f"server not ready after {ready_timeout_s}s:\n{server.log_tail()}")


@pytest.fixture
def servers() -> Iterator[Callable[..., Server]]:
    """``servers(data_dir, env)`` starts a server; all are stopped at teardown."""
    started: list[Server] = []

    def start(data_dir: Path, env: dict[str, str] | None = None) -> Server:
        server = start_server(data_dir, env)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def create_key(url: str, app_id: str, scopes: list[str]) -> str:
    """A key in the database at ``url`` (migrated first, as ``gate keys create`` does)."""
    from gate.db.migrate import ensure_schema

    engine = make_engine(url)
    ensure_schema(engine)
    store = KeyStore(engine)
    try:
        return store.create(app_id, scopes).token
    finally:
        store.close()


def sqlite_url(data_dir: Path) -> str:
    data_dir.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{(data_dir / 'gate.db').resolve()}"
