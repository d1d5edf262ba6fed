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
prompt; any other text in the graph is screened as prompt too (all of it, or the prompt is
refused: nothing past the screening limit is forwarded unscreened).

**The proxy knows every field it forwards**: the ``/prompt`` body's keys
(``PROMPT_FIELDS``), each node's keys (``class_type``, ``inputs``, ``_meta``) and the
upload's form fields (``UPLOAD_FIELDS``); anything else is refused (400
``unknown_parameter``). **Every string in the body that reads as an image is an image**
(``gate.proxy.media``): inline images in any node input, at any depth, take their role
from the graph; those elsewhere (``extra_data``...) are checked as ``reference``. Pixels
the gate cannot see are refused (422 ``unverifiable_face_source``): a URL or a file path
(absolute, or naming a media file) in any node input other than a text encoder's text, and
any media loader (a class that loads images, video or latents) other than
``LoadImage``/``LoadImageMask``/``LoadImageOutput`` unless all its inputs are inline
images, and any loader of a stored identity (face model, face embeddings). ``LoadImage``
files are read back from the upstream and checked. The body is forwarded re-serialised,
each inline image re-encoded from the bytes that were checked.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gate.proxy import media
from gate.proxy.body import dump_json, encode_multipart
from gate.proxy.types import Forward, GateFields, Malformed, Part, Unverifiable, unknown_field
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
_MAX_TEXT, _MAX_IMAGES = 20_000, 16
#: ``POST /prompt`` body keys (ComfyUI ``server.py`` ``post_prompt``) and their types.
PROMPT_FIELDS: dict[str, tuple[type, ...]] = {
    "prompt": (dict,), "client_id": (str,), "extra_data": (dict,), "front": (bool,),
    "number": (int, float), "prompt_id": (str,), "partial_execution_targets": (list,)}
NODE_FIELDS = frozenset({"class_type", "inputs", "_meta"})
#: ``POST /upload/image`` text fields, besides the file ``image``.
UPLOAD_FIELDS = frozenset({"type", "subfolder", "overwrite"})
#: Loaders whose file the proxy reads back from the upstream and checks.
LOAD_IMAGE = {"LoadImage": "input", "LoadImageMask": "input", "LoadImageOutput": "output"}
#: A node class that loads media: "load" and a media word, and no model word (model
#: loaders such as ``ImageOnlyCheckpointLoader`` load weights, not pixels).
_LOAD = re.compile(r"load", re.IGNORECASE)
_MEDIA_WORD = re.compile(r"image|img|video|latent|frame|media|mask|picture|photo",
                         re.IGNORECASE)
_MODEL_WORD = re.compile(r"checkpoint|model|vae|clip|lora|controlnet|upscale|adapter|"
                         r"embedding|style|unet|diffusion", re.IGNORECASE)
#: A node that loads a stored identity (a ReActor face model, IP-Adapter face embeddings):
#: a face the gate cannot see.
_STORED_IDENTITY = re.compile(r"load(?!er).*(embed|face_?model)|(embed|face_?model).*load(?!er)",
                              re.IGNORECASE)


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
    text: dict[str, str] = {}
    for part in parts:
        if part.name == "image":
            continue
        if part.name not in UPLOAD_FIELDS:
            raise unknown_field(part.name)
        if part.is_file or part.name in text:
            raise Malformed(f"'{part.name}' must be given once, as a text field",
                            param=part.name)
        try:
            text[part.name] = part.data.decode("utf-8")
        except UnicodeDecodeError:
            raise Malformed(f"'{part.name}' is not UTF-8 text", param=part.name) from None
    if text.get("type", "input") not in _TYPES:
        raise Malformed("type must be input, output or temp", param="type")
    found = media.scan(text)
    if found.images or found.urls:
        name = media.where(found.images[0].path if found.images else found.urls[0])
        raise Malformed(f"'{name}' must be plain text", param=name, code="unexpected_image")
    fields = GateFields(operation="txt2img",
                        images=(ImageInput(role="reference", data=images[0].data),))
    forwarded = [images[0], *(Part(k, v.encode("utf-8")) for k, v in text.items())]
    return fields, Forward(UPLOAD, *encode_multipart(forwarded))


# --------------------------------------------------------------------------- the workflow


def map_prompt(body: Any) -> tuple[Plan, Forward]:
    """``POST /prompt``: the workflow's operation, images (by name or inline) and text."""
    if not isinstance(body, dict) or "prompt" not in body:
        raise Malformed("no prompt", param="prompt")
    for key, value in body.items():
        if key not in PROMPT_FIELDS:
            raise unknown_field(key)
        if not isinstance(value, PROMPT_FIELDS[key]) or (key == "number" and
                                                         isinstance(value, bool)):
            raise Malformed(f"{key} has the wrong type", param=key)
    graph = body["prompt"]
    if not graph:
        raise Malformed("prompt must be an object of nodes", param="prompt")
    for node_id, node in graph.items():
        if not isinstance(node, dict) or not isinstance(node.get("class_type"), str) or \
                not isinstance(node.get("inputs", {}), dict):
            raise Malformed(f"node {node_id} needs a class_type and an inputs object",
                            param=f"prompt.{node_id}")
        for key in node:
            if key not in NODE_FIELDS:
                raise unknown_field(f"prompt.{node_id}.{key}")
    found = media.scan(body, text=lambda p: _is_text(graph, p))
    return _Workflow(graph, found).plan(), Forward(PROMPT, dump_json(found.doc),
                                                     "application/json")


def _media_loader(cls: str) -> bool:
    return bool(_LOAD.search(cls) and _MEDIA_WORD.search(cls) and not _MODEL_WORD.search(cls))


def _is_text(graph: dict[str, Any], path: media.Path) -> bool:
    """A text encoder's text input, or a node's ``_meta`` (its title): prose, not a file."""
    if len(path) < 3 or path[0] != "prompt":
        return False
    if path[2] == "_meta":
        return True
    cls = graph[str(path[1])]["class_type"]
    return len(path) == 4 and path[2] == "inputs" and path[3] in _TEXT_INPUTS and \
        "TextEncode" in cls


class _Workflow:
    def __init__(self, graph: dict[str, Any], found: media.Scan) -> None:
        self.graph = graph
        self.inline: dict[str, list[bytes]] = {}
        self.extra: list[bytes] = []
        for image in found.images:
            if len(image.path) > 3 and image.path[0] == "prompt" and image.path[2] == "inputs":
                self.inline.setdefault(str(image.path[1]), []).append(image.data)
            else:
                self.extra.append(image.data)
        inline_paths = {i.path for i in found.images}
        for path in (*found.urls, *found.files):
            self._refuse_reference(path)
        self.loads: dict[str, list[ImageRef | bytes]] = {}
        for node_id, node in graph.items():
            sources = self._load_of(node_id, node, inline_paths)
            if sources:
                self.loads[node_id] = sources
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
        refs = tuple(dict.fromkeys((self.roles[n], s) for n, sources in self.loads.items()
                                   for s in sources if isinstance(s, ImageRef)))
        inline = tuple(dict.fromkeys(
            [*((self.roles[n], s) for n, sources in self.loads.items() for s in sources
               if isinstance(s, bytes)), *(("reference", d) for d in self.extra)]))
        if len(refs) + len(inline) > _MAX_IMAGES:
            raise Malformed(f"more than {_MAX_IMAGES} images in one workflow", param="prompt")
        positive, negative, other = self._texts()
        prompt = "\n".join(dict.fromkeys([*positive, *other]))
        negative_prompt = "\n".join(dict.fromkeys(negative))
        if max(len(prompt), len(negative_prompt)) > _MAX_TEXT:
            raise Malformed(f"the workflow's text is longer than {_MAX_TEXT} characters; the "
                            "consent gate screens all of it or forwards none",
                            param="prompt")
        return Plan(operation, prompt, negative_prompt, refs, inline)

    # -- images ---------------------------------------------------------------------------
    def _refuse_reference(self, path: media.Path) -> None:
        """A URL or file path in a node's inputs names pixels the gate cannot see (a
        ``LoadImage`` file name is resolved instead)."""
        if len(path) < 4 or path[0] != "prompt" or path[2] != "inputs":
            return  # extra_data, client_id...: not read by any node
        cls = self.graph[str(path[1])]["class_type"]
        value = self._value(path)
        if cls in LOAD_IMAGE and path[3:] == ("image",) and not media.is_url(value):
            return
        what = "an image URL" if media.is_url(value) else "a file path"
        raise Unverifiable(f"{cls} names {what} the consent gate cannot see; upload the "
                           "image and use LoadImage", param=media.where(path[1:]))

    def _value(self, path: media.Path) -> str:
        value: Any = self.graph
        for key in path[1:]:
            value = value[key]
        return str(value)

    def _load_of(self, node_id: str, node: dict[str, Any],
                 inline_paths: set[media.Path]) -> list[ImageRef | bytes]:
        cls = node["class_type"]
        inputs = node.get("inputs", {})
        sources: list[ImageRef | bytes] = list(self.inline.get(node_id, []))
        if _STORED_IDENTITY.search(cls):
            raise Unverifiable(f"{cls} loads a stored face model or face embeddings, a face "
                               "the consent gate cannot see; feed the face as an image",
                               param=cls)
        image = inputs.get("image")
        if cls in LOAD_IMAGE and isinstance(image, str) and \
                ("prompt", node_id, "inputs", "image") not in inline_paths:
            return [*sources, image_ref(image, LOAD_IMAGE[cls])]
        if cls in LOAD_IMAGE or _media_loader(cls):
            # A loader reads pixels from somewhere: acceptable only when everything it is
            # given is an inline image the gate checks (not a linked or literal file name,
            # directory, URL...).
            given = [k for k, v in inputs.items() if isinstance(v, str | list | dict) and
                     ("prompt", node_id, "inputs", k) not in inline_paths]
            if given or not sources:
                raise Unverifiable(f"the consent gate cannot check what {cls} loads; use "
                                   "LoadImage with an uploaded file", param=cls)
        return sources

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

