"""Face embedders: SFace (default), ArcFace (insightface), and a seeded fake.

Input: aligned 112x112 BGR crops. Output: (N, dim) float32, L2-normalised, so that cosine
similarity is a dot product. All faces of a request go through in one batch.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from gate.errors import InferenceError, ModelUnavailable
from gate.vision.detect import ort_session
from gate.vision.packs import SFACE_PACK_ID


@runtime_checkable
class FaceEmbedder(Protocol):
    """Turns aligned face crops into unit vectors."""

    pack_id: str  # stored with every template; another pack cannot read them
    dim: int

    def embed(self, aligned_bgr: Sequence[np.ndarray]) -> np.ndarray: ...


def l2_normalise(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    if vectors.ndim != 2 or not np.all(np.isfinite(vectors)):
        raise InferenceError("recognizer returned non-finite values")
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    if np.any(norms < 1e-6):
        raise InferenceError("recognizer returned a zero vector")
    result: np.ndarray = vectors / norms
    return result


def _blob(aligned_bgr: Sequence[np.ndarray]) -> np.ndarray:
    """NCHW float32 RGB blob, pixel values 0..255 (SFace normalises inside the graph)."""
    batch = np.stack([np.asarray(a, dtype=np.float32)[:, :, ::-1] for a in aligned_bgr])
    return np.ascontiguousarray(batch.transpose(0, 3, 1, 2))


class SFaceEmbedder:
    """OpenCV-zoo SFace 2021dec, 128-d, from the prepared (fp32, dynamic batch) file.

    ``runtime="opencv"`` runs it with OpenCV DNN, ``"onnxruntime"`` with onnxruntime; on
    2 cores OpenCV measured ~2x faster for this graph (see docs/benchmarks.md).
    """

    pack_id = SFACE_PACK_ID
    dim = 128

    def __init__(self, path: Path, *, runtime: str = "opencv", threads: int = 2) -> None:
        self.runtime = runtime
        self._lock = threading.Lock()
        if runtime == "opencv":
            import cv2

            try:
                self._net: Any = cv2.dnn.readNetFromONNX(str(path))
            except Exception as exc:
                raise ModelUnavailable(f"could not load SFace model: {type(exc).__name__}") from exc
            self._session: Any = None
        else:
            self._session = ort_session(path, threads)
            self._input = self._session.get_inputs()[0].name

    def embed(self, aligned_bgr: Sequence[np.ndarray]) -> np.ndarray:
        if not aligned_bgr:
            return np.zeros((0, self.dim), dtype=np.float32)
        blob = _blob(aligned_bgr)
        if self._session is not None:
            out = self._session.run(None, {self._input: blob})[0]
        else:
            with self._lock:  # a cv2.dnn.Net is not safe to share across threads
                self._net.setInput(blob)
                out = self._net.forward()
        return l2_normalise(np.asarray(out).reshape(len(aligned_bgr), -1))


class ArcFaceEmbedder:
    """insightface ArcFace (e.g. w600k_r50 / w600k_mbf), 512-d, via ``model_zoo``."""

    dim = 512

    def __init__(self, path: Path, *, digest: str, threads: int = 2) -> None:
        import onnxruntime as ort
        from insightface.model_zoo import model_zoo

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.log_severity_level = 3
        try:
            model = model_zoo.get_model(str(path), providers=["CPUExecutionProvider"],
                                        sess_options=options)
        except Exception as exc:
            raise ModelUnavailable(f"could not load ArcFace model {path.name}") from exc
        if model is None or type(model).__name__ != "ArcFaceONNX":
            raise ModelUnavailable(f"{path.name} is not an ArcFace recognizer")
        self._model = model
        self.pack_id = f"insightface/arcface-{digest[:12]}"

    def embed(self, aligned_bgr: Sequence[np.ndarray]) -> np.ndarray:
        if not aligned_bgr:
            return np.zeros((0, self.dim), dtype=np.float32)
        return l2_normalise(self._model.get_feat(list(aligned_bgr)))


class FakeEmbedder:
    """Deterministic vectors seeded by the crop's pixels (identical crops, identical vectors).

    For fast tests of everything around recognition; it knows nothing about faces.
    """

    pack_id = "fake/seeded"

    def __init__(self, dim: int = 32) -> None:
        self.dim = dim

    def embed(self, aligned_bgr: Sequence[np.ndarray]) -> np.ndarray:
        rows = []
        for crop in aligned_bgr:
            seed = int.from_bytes(hashlib.sha256(np.ascontiguousarray(crop).tobytes()).digest()[:8])
            rows.append(np.random.default_rng(seed).standard_normal(self.dim))
        if not rows:
            return np.zeros((0, self.dim), dtype=np.float32)
        return l2_normalise(np.stack(rows))


class FlipAveragingEmbedder:
    """Test-time augmentation: a face's vector is the average of the vectors of its crop,
    the crop's mirror and, where the caller gives them, zoomed crops of the same face and
    their mirrors (``gate.vision.align.zoom_views``), all in one batch.

    Mirroring is the cheapest augmentation that makes a template less sensitive to pose
    and lighting direction, and it defeats the "mirror the photo" evasion outright; the
    zoomed views average out how tightly the landmarks framed the face (issue 17).
    """

    def __init__(self, base: FaceEmbedder) -> None:
        self.base = base
        self.pack_id = base.pack_id
        self.dim = base.dim

    def embed(self, aligned_bgr: Sequence[np.ndarray]) -> np.ndarray:
        return self.embed_views([[crop] for crop in aligned_bgr])

    def embed_views(self, views: Sequence[Sequence[np.ndarray]]) -> np.ndarray:
        """One vector per face from all its ``views`` (the crop first) and their mirrors."""
        flat = [crop for face in views for crop in face]
        if not flat:
            return self.base.embed([])
        vectors = self.base.embed(flat + [mirror(c) for c in flat])
        return l2_normalise(_sum_rows(vectors[: len(flat)] + vectors[len(flat):],
                                      [len(face) for face in views]))

    def embed_single(self, aligned_bgr: Sequence[np.ndarray]) -> np.ndarray:
        """Each crop's own vector, nothing averaged in: for a caller that adds the rest
        only where it can change an answer (``complete``)."""
        return self.base.embed(aligned_bgr)

    def complete(self, views: Sequence[Sequence[np.ndarray]], singles: np.ndarray
                 ) -> np.ndarray:
        """``embed_views``'s result for faces whose crop's own vector (``views[i][0]``) is
        already known (``singles``): the rest of the views are embedded in one batch."""
        rest = [[mirror(face[0]), *face[1:], *(mirror(c) for c in face[1:])]
                for face in views]
        flat = [crop for face in rest for crop in face]
        if not flat:
            return self.base.embed([])
        return l2_normalise(np.asarray(singles, np.float32) +
                            _sum_rows(self.base.embed(flat), [len(face) for face in rest]))


def _sum_rows(vectors: np.ndarray, counts: Sequence[int]) -> np.ndarray:
    """Consecutive rows of ``vectors`` summed in groups of ``counts``."""
    ends = np.cumsum(counts)
    return np.stack([vectors[end - n:end].sum(axis=0) for n, end in zip(counts, ends,
                                                                         strict=True)])


def mirror(crop: np.ndarray) -> np.ndarray:
    """The crop mirrored left-right (contiguous)."""
    return np.ascontiguousarray(crop[:, ::-1])
