"""Fixtures for the HTTP API tests: a fake-model gate behind ``create_app`` and API keys.

``TestClient`` runs the app in-process (lifespan included); the fake detector sees one
face filling each image and the fake embedder maps identical images to identical vectors,
so an image's bytes stand for a person.
"""

from __future__ import annotations

import base64
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from starlette.exceptions import StarletteDeprecationWarning

from gate.api.app import create_app
from gate.api.keys import KeyStore
from gate.api.settings import ApiSettings
from gate.db import make_engine

with warnings.catch_warnings():  # starlette suggests httpx2; TestClient works on httpx
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from fastapi.testclient import TestClient


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@dataclass(frozen=True)
class Keys:
    """Tokens: ``studio``/``other`` are check keys of two apps, ``admin`` an operator key,
    ``studio_admin`` an admin key of app studio, ``revoked`` a revoked check key."""

    studio: str
    other: str
    admin: str
    studio_admin: str
    revoked: str


@pytest.fixture
def keys(fake_gate: Any) -> Iterator[Keys]:
    store = KeyStore(make_engine(fake_gate.settings.resolved_database_url()))  # migrated
    revoked = store.create("studio", ["check"])
    store.revoke(revoked.key.key_id)
    yield Keys(
        studio=store.create("studio", ["check"]).token,
        other=store.create("other", ["check"]).token,
        admin=store.create("ops", ["admin"]).token,
        studio_admin=store.create("studio", ["admin", "check"]).token,
        revoked=revoked.token,
    )
    store.close()


def make_client(gate: Any, **api: Any) -> TestClient:
    """The sidecar over ``gate``; portal cookies work over the test client's plain HTTP."""
    from gate.consent.config import ConsentConfig

    settings = ApiSettings(**{"rate_limit_per_s": 0, **api})
    consent = ConsentConfig(secure_cookies=False, public_url="http://testserver")
    return TestClient(create_app(gate=gate, api_settings=settings, consent_config=consent),
                      raise_server_exceptions=False)


@pytest.fixture
def client(fake_gate: Any, keys: Keys) -> Iterator[TestClient]:
    with make_client(fake_gate) as c:
        yield c


from tests.e2e.postgres import pg_url, pg_url_factory  # noqa: E402, F401  (fixtures)
