"""The ComfyUI custom node, loaded as ComfyUI loads it (a folder package), without ComfyUI
or torch: IMAGE batches are numpy arrays [B,H,W,C] in 0..1."""

from __future__ import annotations

import importlib.util
import io
import sys
import warnings
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import numpy as np
import pytest
from PIL import Image
from starlette.exceptions import StarletteDeprecationWarning

from gate.api.app import create_app
from gate.api.settings import ApiSettings
from gate.engine import FaceGate
from tests.conftest import REPO
from tests.proxy.conftest import CONSENTING, PROTECTED, STRANGER, People

with warnings.catch_warnings():
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from fastapi.testclient import TestClient


@pytest.fixture(scope="module")
def package() -> ModuleType:
    folder = REPO / "integrations" / "comfyui"
    spec = importlib.util.spec_from_file_location(
        "comfyui_consent_gate", folder / "__init__.py", submodule_search_locations=[str(folder)])
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def tensor(png: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(png)) as img:
        return np.asarray(img.convert("RGB"), dtype=np.float32)[None] / 255.0


class FakeTensor:
    """Quacks like a torch tensor: ``.cpu().numpy()``."""

    def __init__(self, array: np.ndarray) -> None:
        self.array = array

    def cpu(self) -> FakeTensor:
        return self

    def numpy(self) -> np.ndarray:
        return self.array


@pytest.fixture
def node(package: ModuleType) -> Iterator[Any]:
    cls = package.NODE_CLASS_MAPPINGS["ConsentGateCheck"]
    yield cls()
    cls.backend = None


def test_node_is_declared_for_comfyui(package: ModuleType) -> None:
    cls = package.NODE_CLASS_MAPPINGS["ConsentGateCheck"]
    spec = cls.INPUT_TYPES()
    assert spec["required"]["image"] == ("IMAGE",)
    assert "face_swap" in spec["required"]["operation"][0]
    assert cls.RETURN_TYPES == ("IMAGE",) and cls.FUNCTION == "check"
    assert package.NODE_DISPLAY_NAME_MAPPINGS["ConsentGateCheck"] == "Consent Gate Check"


def test_tensor_to_png_round_trips_pixels(package: ModuleType) -> None:
    pngs = package.nodes.to_png_list(FakeTensor(np.concatenate([tensor(STRANGER)] * 2)))
    assert len(pngs) == 2
    with Image.open(io.BytesIO(pngs[0])) as a, Image.open(io.BytesIO(STRANGER)) as b:
        assert a.convert("RGB").tobytes() == b.convert("RGB").tobytes()


def test_sdk_backend_stops_a_swap_without_consent(node: Any, package: ModuleType,
                                                  fake_gate: FaceGate, people: People) -> None:
    type(node).backend = package.nodes.SdkBackend(gate=fake_gate, app_id="studio")
    with pytest.raises(package.nodes.ConsentGateRefused, match="needs_consent"):
        node.check(tensor(STRANGER), "face_swap", "target", "")
    with pytest.raises(package.nodes.ConsentGateRefused, match="deny"):
        node.check(tensor(STRANGER), "face_swap", source_image=tensor(PROTECTED))
    fake_gate.grant(people.consenting, app_id="studio", operations=["face_swap"])
    image = tensor(CONSENTING)
    assert node.check(image, "face_swap", "target", "portrait")[0] is image


@pytest.mark.parametrize("use_client", [True, False])
def test_sidecar_backend_with_and_without_gate_client(
        node: Any, package: ModuleType, fake_gate: FaceGate, people: People,
        key_store: Any, use_client: bool) -> None:
    token = key_store.create("studio", ["check"]).token
    app = create_app(gate=fake_gate, api_settings=ApiSettings(rate_limit_per_s=0))
    with TestClient(app) as http:
        type(node).backend = package.nodes.SidecarBackend(
            "http://testserver", token, http=http, use_client=use_client)
        with pytest.raises(package.nodes.ConsentGateRefused, match="needs_consent"):
            node.check(tensor(STRANGER), "inpaint", "init")
        fake_gate.grant(people.consenting, app_id="studio", operations=["inpaint"])
        assert node.check(tensor(CONSENTING), "inpaint", "init")[0] is not None
        type(node).backend = package.nodes.SidecarBackend(
            "http://testserver", "gk_wrong", http=http, use_client=use_client)
        with pytest.raises(Exception, match=r"invalid or revoked|HTTP 401"):
            node.check(tensor(CONSENTING), "inpaint", "init")
