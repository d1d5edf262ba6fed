"""``ConsentGateCheck``: ask consent-gate before a face node runs; stop the workflow if not.

The node takes the IMAGE that a face node will change (ReActor's ``input_image``, an
IP-Adapter FaceID / InstantID / PuLID face, an inpainting init image), optionally the
source face, the operation and the prompt. It passes the image through unchanged when the
gate allows, and raises ``ConsentGateRefused`` with the decision's reasons otherwise,
which stops the queue item in ComfyUI.

Backends, chosen from the environment:

* ``CONSENT_GATE_URL`` (+ ``CONSENT_GATE_API_KEY``): the HTTP sidecar, through
  ``gate.client.GateClient`` when consent-gate is installed, else plain httpx.
* otherwise ``CONSENT_GATE_DATA_DIR`` (default ``data``): the embedded SDK
  (``FaceGate.open``), deciding for app ``CONSENT_GATE_APP_ID`` (default ``comfyui``).
"""

from __future__ import annotations

import base64
import io
import os
import threading
from typing import Any, ClassVar, Protocol

OPERATIONS = ["face_swap", "inpaint", "img2img", "edit", "avatar_train", "face_restore",
              "video_face_swap", "txt2img", "nudify"]
ROLES = ["target", "init", "reference", "source", "training"]


class ConsentGateRefused(RuntimeError):
    """The gate did not allow the face operation; the message lists the reasons."""

    def __init__(self, decision: dict[str, Any]) -> None:
        reasons = "; ".join(str(r.get("message", "")) for r in decision.get("reasons", []))
        super().__init__(f"consent-gate: {decision.get('verdict')}: {reasons or 'not allowed'}"
                         f" (request {decision.get('request_id')})")
        self.decision = decision


class Backend(Protocol):
    def check(self, request: dict[str, Any]) -> dict[str, Any]:
        """The decision (as JSON) for ``request`` (GateRequest fields, images as bytes)."""
        ...


# --------------------------------------------------------------------------- images


def to_png_list(image: Any) -> list[bytes]:
    """ComfyUI IMAGE ([B,H,W,C] float 0..1 tensor, or a numpy array) -> PNG files."""
    import numpy as np
    from PIL import Image

    if hasattr(image, "cpu"):
        image = image.cpu().numpy()
    array = np.asarray(image, dtype=np.float32)
    if array.ndim == 3:
        array = array[None]
    if array.ndim != 4 or array.shape[-1] not in (1, 3, 4):
        raise ValueError("IMAGE must be [B,H,W,C] with 1, 3 or 4 channels")
    out = []
    for item in np.clip(array * 255.0 + 0.5, 0, 255).astype(np.uint8):
        if item.shape[-1] == 1:
            item = item[..., 0]
        buf = io.BytesIO()
        Image.fromarray(item).save(buf, format="PNG")
        out.append(buf.getvalue())
    return out


# --------------------------------------------------------------------------- backends


class SdkBackend:
    """The embedded engine (``pip install consent-gate``)."""

    def __init__(self, gate: Any = None, app_id: str | None = None) -> None:
        self._gate = gate
        self._app_id = app_id or os.environ.get("CONSENT_GATE_APP_ID", "comfyui")
        self._lock = threading.Lock()

    def _engine(self) -> Any:
        with self._lock:
            if self._gate is None:
                from gate import FaceGate

                self._gate = FaceGate.open(os.environ.get("CONSENT_GATE_DATA_DIR", "data"))
            return self._gate

    def check(self, request: dict[str, Any]) -> dict[str, Any]:
        from gate import GateRequest, ImageInput, Requester

        fields = dict(request)
        user_id = fields.pop("user_id", None)
        fields["images"] = [ImageInput(role=i["role"], data=i["data"]) for i in fields["images"]]
        decision = self._engine().check(GateRequest(
            **fields, requester=Requester(app_id=self._app_id, user_id=user_id)))
        return dict(decision.model_dump(mode="json"))


class SidecarBackend:
    """The HTTP sidecar: ``GateClient`` when consent-gate is installed, else httpx."""

    def __init__(self, url: str | None = None, api_key: str | None = None, *,
                 http: Any = None, use_client: bool = True) -> None:
        self.url = url or os.environ.get("CONSENT_GATE_URL", "http://127.0.0.1:8080")
        self.api_key = api_key or os.environ.get("CONSENT_GATE_API_KEY", "")
        self._http = http
        self._use_client = use_client

    def check(self, request: dict[str, Any]) -> dict[str, Any]:
        if self._use_client:
            try:
                from gate.client import GateClient
            except ImportError:
                pass
            else:
                return self._with_client(GateClient, request)
        return self._with_httpx(request)

    def _with_client(self, client_class: Any, request: dict[str, Any]) -> dict[str, Any]:
        from gate import GateRequest, ImageInput, Requester

        fields = dict(request)
        user_id = fields.pop("user_id", None)
        fields["images"] = [ImageInput(role=i["role"], data=i["data"]) for i in fields["images"]]
        client = client_class(self.url, self.api_key, http=self._http)
        try:  # the key's app decides; app_id here is only a placeholder the client drops
            decision = client.check(GateRequest(
                **fields, requester=Requester(app_id="sidecar", user_id=user_id)))
        finally:
            client.close()
        return dict(decision.model_dump(mode="json"))

    def _with_httpx(self, request: dict[str, Any]) -> dict[str, Any]:
        import httpx

        body = {**{k: v for k, v in request.items() if k != "images"},
                "images": [{"role": i["role"],
                            "data_b64": base64.b64encode(i["data"]).decode("ascii")}
                           for i in request["images"]]}
        http = self._http or httpx.Client(base_url=self.url, timeout=60.0)
        try:
            response = http.post("/v1/check", json=body,
                                 headers={"Authorization": f"Bearer {self.api_key}"})
        finally:
            if self._http is None:
                http.close()
        if response.status_code != 200:  # fail closed: no decision is no allow
            raise ConsentGateRefused({"verdict": "error", "reasons": [
                {"message": f"the consent gate answered HTTP {response.status_code}"}]})
        return dict(response.json())


def default_backend() -> Backend:
    return SidecarBackend() if os.environ.get("CONSENT_GATE_URL") else SdkBackend()


# --------------------------------------------------------------------------- the node


class ConsentGateCheck:
    """Checks the face operation with consent-gate; passes ``image`` through if allowed."""

    CATEGORY = "consent-gate"
    FUNCTION = "check"
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("image",)
    DESCRIPTION = ("Asks consent-gate whether the faces in the image(s) may be used for this "
                   "operation; stops the workflow with the reasons when not allowed.")
    backend: ClassVar[Backend | None] = None

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "image": ("IMAGE",),
                "operation": (OPERATIONS, {"default": "face_swap"}),
                "role": (ROLES, {"default": "target"}),
                "prompt": ("STRING", {"multiline": True, "default": ""}),
            },
            "optional": {
                "source_image": ("IMAGE",),
                "negative_prompt": ("STRING", {"multiline": True, "default": ""}),
                "user_id": ("STRING", {"default": ""}),
                "purpose": ("STRING", {"default": ""}),
            },
        }

    @classmethod
    def IS_CHANGED(cls, **_: Any) -> float:
        return float("nan")  # always re-check: consent can be revoked at any time

    def check(self, image: Any, operation: str, role: str = "target", prompt: str = "",
              source_image: Any = None, negative_prompt: str = "", user_id: str = "",
              purpose: str = "") -> tuple[Any]:
        images = [{"role": role, "data": d} for d in to_png_list(image)]
        if source_image is not None:
            images += [{"role": "source", "data": d} for d in to_png_list(source_image)]
        request = {"operation": operation, "images": images, "prompt": prompt,
                   "negative_prompt": negative_prompt, "user_id": user_id or None,
                   "purpose": purpose or None}
        backend = type(self).backend or default_backend()
        decision = backend.check(request)
        if decision.get("verdict") != "allow":
            raise ConsentGateRefused(decision)
        return (image,)


NODE_CLASS_MAPPINGS = {"ConsentGateCheck": ConsentGateCheck}
NODE_DISPLAY_NAME_MAPPINGS = {"ConsentGateCheck": "Consent Gate Check"}
