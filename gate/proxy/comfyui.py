"""ComfyUI server API: workflow mapping, image references and error style (pure functions).

Shapes (ComfyUI ``server.py`` routes and ``script_examples/basic_api_example.py`` /
``websockets_api_example.py``): ``POST /upload/image`` (multipart ``image``, optional
``type``, ``subfolder``, ``overwrite``; answers ``{"name", "subfolder", "type"}``),
``POST /prompt`` (JSON ``{"prompt": {node_id: {"class_type", "inputs"}}, "client_id"}``;
answers ``{"prompt_id", "number", "node_errors"}``), ``GET /history/{prompt_id}``
(``{prompt_id: {"outputs": {node_id: {"images": [{"filename", "subfolder", "type"}]}}}}``)
and ``GET /view?filename=&subfolder=&type=``. Every route also exists under ``/api``.
Errors: ``{"error": {"type", "message", "details", "extra_info"}, "node_errors": {}}``.

The workflow graph decides the operation: identity-transfer nodes (ReActor, IP-Adapter
FaceID, InstantID, PuLID) make it a ``face_swap`` (the face fed to them is the ``source``,
the image ReActor swaps into is the ``target``); otherwise an inpainting node
(``VAEEncodeForInpaint``, ``SetLatentNoiseMask``, ``InpaintModelConditioning``) makes it
``inpaint``, a ``VAEEncode`` of a loaded image ``img2img``, and anything else ``txt2img``.
Text reaching a ``positive`` input is the prompt, a ``negative`` input the negative
prompt; any other text in the graph is screened as prompt too.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gate.proxy.body import encode_multipart, inline_image
from gate.proxy.types import Forward, GateFields, Malformed, Part, Unverifiable
from gate.types import ImageInput

UPLOAD, PROMPT, VIEW = "/upload/image", "/prompt", "/view"
_ANNOTATION = re.compile(r"\s*\[(input|output|temp)\]\s*$")
_TYPES = ("input", "output", "temp")

#: Identity-transfer nodes: which inputs carry the face (source) and the image changed.
FACE_NODES: dict[str, dict[str, tuple[str, ...]]] = {
    "ReActorFaceSwap": {"source": ("source_image",), "target": ("input_image",)},
    "ReActorFaceSwapOpt": {"source": ("source_image",), "target": ("input_image",)},
    "IPAdapterFaceID": {"source": ("image", "image_negative")},
    "IPAdapterFaceIDKolors": {"source": ("image", "image_negative")},
    "ApplyInstantID": {"source": ("image",), "reference": ("image_kps",)},
    "ApplyInstantIDAdvanced": {"source": ("image",), "reference": ("image_kps",)},
    "ApplyPulid": {"source": ("image",)},
    "ApplyPulidAdvanced": {"source": ("image",)},
    "ApplyPulidFlux": {"source": ("image",)},
}
#: Loaders of identity-transfer models: their presence alone makes it a face swap.
FACE_MARKERS = frozenset({
    "IPAdapterUnifiedLoaderFaceID", "InstantIDFaceAnalysis", "InstantIDModelLoader",
    "PulidModelLoader", "PulidInsightFaceLoader", "PulidEvaClipLoader",
    "PulidFluxModelLoader", "ReActorLoadFaceModel",
})
INPAINT_NODES: dict[str, dict[str, tuple[str, ...]]] = {
    "VAEEncodeForInpaint": {"init": ("pixels",), "mask": ("mask",)},
    "SetLatentNoiseMask": {"mask": ("mask",)},
    "InpaintModelConditioning": {"init": ("pixels",), "mask": ("mask",)},
}
ENCODE_NODES: dict[str, dict[str, tuple[str, ...]]] = {"VAEEncode": {"init": ("pixels",)}}
_ROLE_ORDER = ("source", "target", "init", "mask", "reference")
_TEXT_INPUTS = frozenset({"text", "text_g", "text_l", "t5xxl", "clip_l", "prompt", "value",
                          "string"})


@dataclass(frozen=True, slots=True)
class ImageRef:
    """A file on the ComfyUI server, named as its routes name it."""

    filename: str
    subfolder: str = ""
    type: str = "input"

    @property
    def key(self) -> str:
        return f"{self.type}/{self.subfolder}/{self.filename}"

    def params(self) -> tuple[tuple[str, str], ...]:
        return (("filename", self.filename), ("subfolder", self.subfolder), ("type", self.type))


@dataclass(frozen=True, slots=True)
class Plan:
    """What the gate must decide for a workflow: images are named, not yet fetched."""

    operation: str
    prompt: str
    negative_prompt: str
    refs: tuple[tuple[str, ImageRef], ...]
    inline: tuple[tuple[str, bytes], ...] = ()


# --------------------------------------------------------------------------- references


def image_ref(value: str, default_type: str = "input") -> ImageRef:
    """``"sub/name.png [input]"`` (a LoadImage value) -> its file reference."""
    kind = default_type
    match = _ANNOTATION.search(value)
    if match:
        kind, value = match.group(1), value[:match.start()]
    subfolder, _, filename = value.rpartition("/")
    _check_name(filename, subfolder)
    return ImageRef(filename, subfolder, kind)


def query_ref(params: Mapping[str, str]) -> ImageRef:
    """The file a ``/view`` query names (``type`` defaults to ``output`` as upstream)."""
    filename = params.get("filename")
    kind = params.get("type") or "output"
    if not filename or kind not in _TYPES:
        raise Malformed("give a filename and a type of input, output or temp", param="filename")
    ref = image_ref(filename, kind)
    subfolder = params.get("subfolder", "")
    _check_name(ref.filename, subfolder)
    return ImageRef(ref.filename, subfolder or ref.subfolder, ref.type)


def _check_name(filename: str, subfolder: str) -> None:
    if not filename or filename.startswith("/") or ".." in filename or ".." in subfolder \
            or subfolder.startswith("/") or "\x00" in filename + subfolder:
        raise Malformed("invalid image file name", param="filename")


def upload_ref(doc: Any) -> ImageRef:
    """The stored file named by an ``/upload/image`` answer."""
    if not isinstance(doc, dict) or not isinstance(doc.get("name"), str):
        raise Malformed("the upstream upload answer has no 'name'")
    kind = doc.get("type") or "input"
    return ImageRef(doc["name"], str(doc.get("subfolder") or ""),
                    kind if kind in _TYPES else "input")


def history_outputs(doc: Any) -> dict[str, list[ImageRef]]:
    """Image files of each prompt in a ``/history`` answer."""
    out: dict[str, list[ImageRef]] = {}
    if not isinstance(doc, dict):
        return out
    for prompt_id, entry in doc.items():
        outputs = entry.get("outputs") if isinstance(entry, dict) else None
        refs: list[ImageRef] = []
        for node in (outputs or {}).values() if isinstance(outputs, dict) else ():
            for img in node.get("images", []) if isinstance(node, dict) else ():
                if isinstance(img, dict) and isinstance(img.get("filename"), str):
                    refs.append(ImageRef(img["filename"], str(img.get("subfolder") or ""),
                                         str(img.get("type") or "output")))
        out[str(prompt_id)] = refs
    return out


# --------------------------------------------------------------------------- uploads


def map_upload(parts: Sequence[Part]) -> tuple[GateFields, Forward]:
    """``POST /upload/image``: the file is pre-screened as a ``txt2img`` reference (only a
    ``deny``, e.g. a protected person, refuses it) and forwarded re-encoded from the parts
    checked here (so the upstream cannot parse another file out of the same body); the
    gate decides with the real operation when a prompt uses it."""
    images = [p for p in parts if p.name == "image"]
    if len(images) != 1 or not images[0].is_file or not images[0].data:
        raise Malformed("send exactly one file in the 'image' field", param="image")
    if len({p.name for p in parts}) != len(parts):
        raise Malformed("a form field is repeated", param="image")
    fields = GateFields(operation="txt2img",
                        images=(ImageInput(role="reference", data=images[0].data),))
    return fields, Forward(UPLOAD, *encode_multipart(parts))


# --------------------------------------------------------------------------- the workflow


def map_prompt(body: Any, raw: bytes) -> tuple[Plan, Forward]:
    """``POST /prompt``: the workflow's operation, images (by name) and text."""
    if not isinstance(body, dict) or "prompt" not in body:
        raise Malformed("no prompt", param="prompt")
    graph = body["prompt"]
    if not isinstance(graph, dict) or not graph:
        raise Malformed("prompt must be an object of nodes", param="prompt")
    for node_id, node in graph.items():
        if not isinstance(node, dict) or not isinstance(node.get("class_type"), str) or \
                not isinstance(node.get("inputs", {}), dict):
            raise Malformed(f"node {node_id} needs a class_type and an inputs object",
                            param=f"prompt.{node_id}")
    return _Workflow(graph).plan(), Forward(PROMPT, raw, "application/json")


class _Workflow:
    def __init__(self, graph: dict[str, Any]) -> None:
        self.graph = graph
        self.loads: dict[str, ImageRef | bytes] = {}
        for node_id, node in graph.items():
            source = self._load_of(node)
            if source is not None:
                self.loads[node_id] = source
        self.roles: dict[str, str] = {}

    def plan(self) -> Plan:
        classes = {n["class_type"] for n in self.graph.values()}
        face = bool(classes & (set(FACE_NODES) | FACE_MARKERS))
        self._assign(FACE_NODES)
        self._check_face_models()
        self._assign(INPAINT_NODES)
        inpaint = any(r == "mask" for r in self.roles.values()) or bool(
            classes & set(INPAINT_NODES) and any(r == "init" for r in self.roles.values()))
        self._assign(ENCODE_NODES)
        if face:
            operation = "face_swap"
            rest = "source" if not any(r == "source" for r in self.roles.values()) else "target"
        elif inpaint:
            operation, rest = "inpaint", "reference"
        elif any(r == "init" for r in self.roles.values()):
            operation, rest = "img2img", "reference"
        else:
            operation, rest = "txt2img", "reference"
        for node_id in self.loads:
            self.roles.setdefault(node_id, rest)
        if len(self.loads) > 16:
            raise Malformed("more than 16 images in one workflow", param="prompt")
        positive, negative, other = self._texts()
        refs = tuple((self.roles[n], s) for n, s in self.loads.items() if isinstance(s, ImageRef))
        inline = tuple((self.roles[n], s) for n, s in self.loads.items() if isinstance(s, bytes))
        prompt = "\n".join(dict.fromkeys([*positive, *other]))
        return Plan(operation, prompt[:20_000], "\n".join(dict.fromkeys(negative))[:20_000],
                    refs, inline)

    # -- images ---------------------------------------------------------------------------
    def _load_of(self, node: dict[str, Any]) -> ImageRef | bytes | None:
        cls = node["class_type"]
        inputs = node.get("inputs", {})
        for name, value in inputs.items():
            if not isinstance(value, str):
                continue
            if value.startswith(("http://", "https://")) and "image" in cls.lower():
                raise Unverifiable("image URLs are not accepted through the consent gate; "
                                   "upload the image first", param=f"{cls}.{name}")
            if len(value) >= 64 and "image" in (cls + name).lower():
                data = inline_image(value)
                if data is not None:
                    return data
        image = inputs.get("image")
        if "LoadImage" in cls and isinstance(image, str):
            default = "output" if cls == "LoadImageOutput" else "input"
            return image_ref(image, default)
        if "Load" in cls and ("Image" in cls or "Video" in cls):
            # A loader whose file the gate cannot name (a linked file name, a directory,
            # a batch, a video) would feed pixels the gate never saw.
            raise Unverifiable(f"the consent gate cannot check what {cls} loads; use "
                               "LoadImage with an uploaded file", param=cls)
        return None

    def _ancestors(self, start: Any, polarity: str | None = None) -> set[str]:
        """Nodes ``start`` depends on. With a ``polarity`` (positive / negative), a node
        that has both conditioning inputs is only followed through the same one."""
        seen: set[str] = set()
        stack = [start[0]] if _is_link(start) else []
        while stack:
            node_id = str(stack.pop())
            if node_id in seen or node_id not in self.graph:
                continue
            seen.add(node_id)
            inputs = self.graph[node_id].get("inputs", {})
            if polarity is not None and {"positive", "negative"} <= set(inputs):
                inputs = {polarity: inputs[polarity]}
            stack += [v[0] for v in inputs.values() if _is_link(v)]
        return seen

    def _assign(self, table: dict[str, dict[str, tuple[str, ...]]]) -> None:
        for node in self.graph.values():
            spec = table.get(node["class_type"])
            if spec is None:
                continue
            for role, inputs in spec.items():
                for name in inputs:
                    for node_id in self._ancestors(node.get("inputs", {}).get(name)):
                        if node_id in self.loads:
                            self._set_role(node_id, role)

    def _set_role(self, node_id: str, role: str) -> None:
        current = self.roles.get(node_id)
        if current is None or _ROLE_ORDER.index(role) < _ROLE_ORDER.index(current):
            self.roles[node_id] = role

    def _check_face_models(self) -> None:
        for node in self.graph.values():
            if node["class_type"].startswith("ReActorFaceSwap"):
                inputs = node.get("inputs", {})
                if not _is_link(inputs.get("source_image")) and inputs.get("face_model"):
                    raise Unverifiable("a ReActor face model cannot be checked by the consent "
                                       "gate; feed the source face as an image",
                                       param="face_model")

    # -- text -----------------------------------------------------------------------------
    def _texts(self) -> tuple[list[str], list[str], list[str]]:
        positive: list[str] = []
        negative: list[str] = []
        used: set[str] = set()
        for node in self.graph.values():
            inputs = node.get("inputs", {})
            for name, bucket in (("positive", positive), ("negative", negative)):
                for node_id in self._ancestors(inputs.get(name), name):
                    found = _strings(self.graph[node_id])
                    bucket += found
                    if found:
                        used.add(node_id)
        other = [s for node_id, node in self.graph.items() if node_id not in used
                 and ("Text" in node["class_type"] or "Prompt" in node["class_type"])
                 for s in _strings(node)]
        return positive, negative, other


def _is_link(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 2 and isinstance(value[0], (str, int)) \
        and isinstance(value[1], int) and not isinstance(value[1], bool)


def _strings(node: dict[str, Any]) -> list[str]:
    return [v for k, v in node.get("inputs", {}).items()
            if k in _TEXT_INPUTS and isinstance(v, str) and v.strip()]


# --------------------------------------------------------------------------- errors


def error_body(status: int, code: str, message: str, param: str | None,
               decision: dict[str, Any] | None) -> dict[str, Any]:
    extra: dict[str, Any] = {"code": code}
    if param:
        extra["field"] = param
    body: dict[str, Any] = {
        "error": {"type": code, "message": message, "details": "", "extra_info": extra},
        "node_errors": {}}
    if decision is not None:
        body["decision"] = decision
    return body

