"""Fixtures for the consent lifecycle: services over fake gates, a "pose gate" whose fake
detector reads a scripted head pose from the picture, and a tiny FastAPI app that mounts
``gate.consent.http.router`` with the sidecar's real API-key authentication."""

from __future__ import annotations

import io
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from starlette.exceptions import StarletteDeprecationWarning

import gate.consent.tables  # noqa: F401  (registers the consent tables on gate.db.metadata)
from gate.consent.config import ConsentConfig
from gate.consent.service import ConsentService
from gate.engine import FaceGate
from gate.vision.align import ARCFACE_TEMPLATE
from gate.vision.detect import Detection, FakeDetector
from gate.vision.embed import l2_normalise

with warnings.catch_warnings():  # starlette suggests httpx2; TestClient works on httpx
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from fastapi.testclient import TestClient

TEST_CONFIG = {"secure_cookies": False, "self_enrolment": True,
               "public_url": "http://testserver"}


@pytest.fixture
def svc(fake_gate: FaceGate) -> Iterator[ConsentService]:
    service = ConsentService(fake_gate, ConsentConfig(**TEST_CONFIG))
    yield service
    service.close()


# -- the pose gate: pictures that script a head pose and a person -----------------------
def pose_picture(person: int, yaw: float, *, frame: int = 0, size: int = 128) -> bytes:
    """A flat-coloured "face" of ``person`` whose pose marker says ``yaw``.

    The top-left 6x6 block's blue value encodes the yaw ratio; per-frame noise makes every
    frame a different picture (as a camera would)."""
    from PIL import Image

    rng = np.random.default_rng(person * 1000 + frame)
    colour = np.array([40 + 50 * (person % 4), 60 + 45 * ((person // 4) % 4),
                       30 + 55 * ((person // 16) % 4)], dtype=np.int16)
    pixels = colour + rng.integers(-8, 9, (size, size, 3), dtype=np.int16)
    nose = int(size / 2 + yaw * 100)  # a dark "nose" stripe moves as the head turns
    pixels[20:100, nose - 3:nose + 3] = colour - 35
    pixels[:6, :6] = [0, 0, round(128 + yaw * 256)]  # RGB: blue carries the yaw
    buf = io.BytesIO()
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def burst(person: int, yaws: Sequence[float], start: int = 0) -> list[bytes]:
    return [pose_picture(person, y, frame=start + i) for i, y in enumerate(yaws)]


LEFT_RIGHT = (0.0, 0.0, 0.3, 0.3, -0.3, -0.3)
RIGHT_LEFT = (0.0, 0.0, -0.3, -0.3, 0.3, 0.3)


def answer(poses: Sequence[str], person: int, start: int = 0) -> list[bytes]:
    """A burst that follows ``poses`` (e.g. the challenge the gate asked for)."""
    yaw = {"front": 0.0, "left": 0.3, "right": -0.3}
    return burst(person, [yaw[p] for p in poses for _ in range(2)], start)


def _pose_script(image_bgr: np.ndarray) -> list[Detection]:
    h, w = image_bgr.shape[:2]
    yaw = (float(image_bgr[0, 0, 0]) - 128) / 256  # BGR: channel 0 is blue
    pts = ARCFACE_TEMPLATE * np.array([w / 112.0, h / 112.0], dtype=np.float32)
    eye_dist = float(pts[1, 0] - pts[0, 0])
    pts = pts.copy()
    pts[2, 0] = (pts[0, 0] + pts[1, 0]) / 2 + yaw * eye_dist
    return [Detection(bbox=(0.0, 0.0, float(w), float(h)),
                      landmarks=tuple((float(x), float(y)) for x, y in pts), score=0.99)]


class ColourEmbedder:
    """Same person (flat colour) -> same vector, whatever the pose or the noise."""

    pack_id = "test/colour"
    dim = 32

    def embed(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        rows = []
        for crop in crops:
            centre = crop[44:68, 44:68].reshape(-1, 3).astype(np.float64)
            key = tuple(int(v) // 24 for v in np.median(centre, axis=0))
            seed = key[0] * 10_000 + key[1] * 100 + key[2]
            rows.append(np.random.default_rng(seed).standard_normal(self.dim))
        if not rows:
            return np.zeros((0, self.dim), dtype=np.float32)
        return l2_normalise(np.stack(rows))


def make_pose_gate(data_dir: Path, **overrides: Any) -> FaceGate:
    from gate.factory import build_gate
    from gate.settings import Settings

    settings = Settings(data_dir=data_dir, detector="fake", embedder="fake",
                        match_threshold=0.9, **overrides)
    return build_gate(settings, detector=FakeDetector(_pose_script), embedder=ColourEmbedder())


@pytest.fixture
def pose_gate(tmp_path: Path) -> Iterator[FaceGate]:
    gate = make_pose_gate(tmp_path / "pose")
    yield gate
    gate.close()


@pytest.fixture
def pose_svc(pose_gate: FaceGate) -> Iterator[ConsentService]:
    service = ConsentService(pose_gate, ConsentConfig(**TEST_CONFIG))
    yield service
    service.close()


# -- a tiny app around the router, with the sidecar's API keys --------------------------
@dataclass
class Api:
    client: TestClient
    studio: str  # check key of app "studio"
    other: str  # check key of app "other"
    admin: str  # admin key

    @staticmethod
    def bearer(token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}


def tiny_app(gate: FaceGate, service: ConsentService) -> Any:
    from fastapi import FastAPI

    from gate.api.errors import install_error_handlers
    from gate.api.keys import KeyStore
    from gate.api.limits import RateLimiter
    from gate.api.metrics import Metrics
    from gate.api.routes import consent, portal
    from gate.api.services import Services
    from gate.api.settings import ApiSettings

    app = FastAPI()
    install_error_handlers(app)
    app.include_router(consent.router)
    app.include_router(portal.router)
    metrics = Metrics()
    api = ApiSettings(rate_limit_per_s=0)
    app.state.services = Services(
        gate=gate, consent=service, keys=KeyStore(service.engine),
        limiter=RateLimiter(0, 1), metrics=metrics, api=api)
    return app


def _api(gate: FaceGate, service: ConsentService) -> Iterator[Api]:
    app = tiny_app(gate, service)
    keys = app.state.services.keys
    with TestClient(app, raise_server_exceptions=False) as client:
        yield Api(client, keys.create("studio", ["check"]).token,
                  keys.create("other", ["check"]).token, keys.create("ops", ["admin"]).token)
    keys.close()


@pytest.fixture
def api(fake_gate: FaceGate, svc: ConsentService) -> Iterator[Api]:
    yield from _api(fake_gate, svc)


@pytest.fixture
def pose_api(pose_gate: FaceGate, pose_svc: ConsentService) -> Iterator[Api]:
    yield from _api(pose_gate, pose_svc)


def portal_headers(csrf: str | None = None) -> dict[str, str]:
    headers = {"X-Gate-Portal": "1"}
    if csrf:
        headers["X-CSRF-Token"] = csrf
    return headers


def link_token(url: str) -> str:
    return url.split("#t=", 1)[1]


Check = Callable[..., Any]
