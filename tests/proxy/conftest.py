"""Fixtures: fake upstream APIs (real servers on 127.0.0.1) and proxies in front of them.

The gate uses the fake detector (one face filling each image) and the fake embedder
(identical pixels, identical vector), so an image's pixels stand for a person:
``PROTECTED`` is enrolled as protected, ``CONSENTING`` as consenting with grants made per
test, ``STRANGER`` is nobody the gate knows.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from starlette.exceptions import StarletteDeprecationWarning

from gate.api.keys import KeyStore
from gate.db import make_engine
from gate.engine import FaceGate
from gate.proxy.app import create_proxy_app
from gate.proxy.settings import ProxySettings
from tests.conftest import noise_png
from tests.proxy.upstreams import Served, State, a1111_app, comfyui_app, openai_app

with warnings.catch_warnings():  # starlette suggests httpx2; TestClient works on httpx
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from fastapi.testclient import TestClient

__all__ = ["TestClient"]

PROTECTED = noise_png(1)
CONSENTING = noise_png(3)
STRANGER = noise_png(7)
OTHER_STRANGER = noise_png(8)
UPSTREAM_AUTH = "Bearer sk-upstream-secret"


@dataclass
class People:
    protected: str
    consenting: str


@dataclass
class Upstream:
    state: State
    served: Served

    @property
    def url(self) -> str:
        return self.served.url


def _serve(make: Callable[[State], Any]) -> Iterator[Upstream]:
    state = State()
    served = Served(make(state))
    yield Upstream(state, served)
    served.stop()


@pytest.fixture(scope="session")
def _openai_server() -> Iterator[Upstream]:
    yield from _serve(openai_app)


@pytest.fixture(scope="session")
def _a1111_server() -> Iterator[Upstream]:
    yield from _serve(a1111_app)


@pytest.fixture(scope="session")
def _comfyui_server() -> Iterator[Upstream]:
    yield from _serve(comfyui_app)


@pytest.fixture
def openai_upstream(_openai_server: Upstream) -> Upstream:
    _openai_server.state.reset(STRANGER)
    return _openai_server


@pytest.fixture
def a1111_upstream(_a1111_server: Upstream) -> Upstream:
    _a1111_server.state.reset(STRANGER)
    return _a1111_server


@pytest.fixture
def comfyui_upstream(_comfyui_server: Upstream) -> Upstream:
    _comfyui_server.state.reset(STRANGER)
    return _comfyui_server


@pytest.fixture
def people(fake_gate: FaceGate) -> People:
    protected = fake_gate.enroll([PROTECTED], "Pat Protected", status="protected",
                                 aliases=["Pat P"])
    consenting = fake_gate.enroll([CONSENTING], "Casey Consenting", status="consenting")
    return People(protected.subject_id, consenting.subject_id)


ProxyFactory = Callable[..., TestClient]


@pytest.fixture
def make_proxy(fake_gate: FaceGate) -> Iterator[ProxyFactory]:
    """``make_proxy(mode, upstream_url, **create_proxy_app kwargs)`` -> a started client."""
    clients: list[TestClient] = []

    def make(mode: str, upstream: str, **kw: Any) -> TestClient:
        if "key_store" not in kw:
            kw.setdefault("app_id", "studio")
        kw.setdefault("settings", ProxySettings())
        app = create_proxy_app(fake_gate, mode=mode, upstream=upstream,  # type: ignore[arg-type]
                               **kw)
        client = TestClient(app, raise_server_exceptions=False)
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for c in clients:
        c.__exit__(None, None, None)


@pytest.fixture
def key_store(fake_gate: FaceGate) -> Iterator[KeyStore]:
    store = KeyStore(make_engine(fake_gate.settings.resolved_database_url()))
    yield store
    store.close()
