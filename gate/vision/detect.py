"""Face detectors: YuNet (default, onnxruntime), SCRFD (insightface), and a scripted fake.

Every detector returns boxes and the 5 landmarks in the order the ArcFace template
expects: eye on the viewer's left, eye on the viewer's right, nose tip, mouth corner on
the viewer's left, mouth corner on the viewer's right.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from gate.errors import InferenceError, ModelUnavailable
from gate.imaging.resize import shrink


@dataclass(frozen=True, slots=True)
class Detection:
    """One detected face in a frame's pixel coordinates."""

    bbox: tuple[float, float, float, float]  # x_min, y_min, x_max, y_max
    landmarks: tuple[tuple[float, float], ...]  # 5 points (x, y)
    score: float  # detector confidence 0..1

    @property
    def size_px(self) -> float:
        return min(self.bbox[2] - self.bbox[0], self.bbox[3] - self.bbox[1])

    def landmarks_array(self) -> np.ndarray:
        return np.asarray(self.landmarks, dtype=np.float32)


@runtime_checkable
class FaceDetector(Protocol):
    """Finds faces in one upright BGR uint8 image."""

    name: str

    def detect(self, image_bgr: np.ndarray) -> list[Detection]: ...


def ort_session(path: Path, threads: int, model: bytes | None = None) -> Any:
    """One onnxruntime CPU session with explicit thread settings (``model``: the graph's
    bytes when it was edited in memory, else it is read from ``path``)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3
    if threads > 1:  # idle intra-op threads yield the core instead of spinning on it
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        return ort.InferenceSession(model if model is not None else str(path), options,
                                    providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own opaque types
        raise ModelUnavailable(f"could not load model {path.name}: {type(exc).__name__}") from exc


def _check_finite(*arrays: np.ndarray) -> None:
    for arr in arrays:
        if not np.all(np.isfinite(arr)):
            raise InferenceError("detector returned non-finite values")


def box_iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    """Intersection over union of two x1,y1,x2,y2 boxes."""
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> list[int]:
    """Greedy non-maximum suppression over x1,y1,x2,y2 boxes."""
    order = np.argsort(-scores, kind="stable")
    x1, y1, x2, y2 = boxes.T
    areas = np.maximum(x2 - x1, 0) * np.maximum(y2 - y1, 0)
    keep: list[int] = []
    while order.size:
        i = int(order[0])
        keep.append(i)
        rest = order[1:]
        w = np.maximum(0.0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]))
        h = np.maximum(0.0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]))
        inter = w * h
        iou = inter / np.maximum(areas[i] + areas[rest] - inter, 1e-9)
        order = rest[iou <= iou_threshold]
    return keep


class YuNetDetector:
    """OpenCV-zoo YuNet 2023mar (5 landmarks) run with onnxruntime.

    The image is letterboxed: scaled so its longer side is 640 px and padded bottom/right
    with black to 640x640. (A graph with dynamic spatial dimensions run at the image's own
    aspect ratio was measured: 25 % cheaper on 4:3 photos but it found 1.6 % fewer 32 px
    faces, so the square input stays.) Outputs are decoded per stride (8/16/32) the way
    OpenCV's ``FaceDetectorYN`` does, then NMS'd.

    ``input_px`` (a multiple of 32) sets the square input; the graph is fully
    convolutional, so its input dimensions are rewritten in memory. 320 costs about a
    quarter of 640 and serves the orientation probe (``gate.vision.robust``), which only
    looks for faces that are large in the picture it is shown.
    """

    name = "yunet"
    _STRIDES = (8, 16, 32)

    def __init__(self, path: Path, *, score_threshold: float = 0.6,
                 nms_threshold: float = 0.3, threads: int = 2, input_px: int = 640) -> None:
        if input_px <= 0 or input_px % 32:
            raise ValueError("input_px must be a positive multiple of 32")
        self.input_px = input_px
        self._session = ort_session(path, threads,
                                    None if input_px == 640 else _resized_graph(path, input_px))
        self._input = self._session.get_inputs()[0].name
        self._outputs = [o.name for o in self._session.get_outputs()]
        self.score_threshold = score_threshold
        self.nms_threshold = nms_threshold
        self._priors = {s: self._grid(s) for s in self._STRIDES}

    def _grid(self, stride: int) -> np.ndarray:
        n = self.input_px // stride
        rows, cols = np.mgrid[0:n, 0:n]
        return np.stack([cols.ravel(), rows.ravel()], axis=1).astype(np.float32)

    def _blob(self, image: np.ndarray) -> tuple[np.ndarray, float]:
        """NCHW float32 input, and the factor from image pixels to input pixels."""
        h, w = image.shape[:2]
        scale = self.input_px / max(h, w)
        nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
        image = shrink(image, (nw, nh))
        blob = np.zeros((1, 3, self.input_px, self.input_px), dtype=np.float32)  # black padding
        for channel in range(3):
            blob[0, channel, :nh, :nw] = image[:, :, channel]
        return blob, scale

    def detect(self, image_bgr: np.ndarray) -> list[Detection]:
        blob, scale = self._blob(image_bgr)
        outs = dict(zip(self._outputs, self._session.run(None, {self._input: blob}), strict=True))
        boxes, kps, scores = [], [], []
        for s in self._STRIDES:
            cls = np.clip(outs[f"cls_{s}"][0, :, 0], 0, 1)
            obj = np.clip(outs[f"obj_{s}"][0, :, 0], 0, 1)
            score = np.sqrt(cls * obj)
            sel = np.nonzero(score >= self.score_threshold)[0]
            if sel.size == 0:
                continue
            prior = self._priors[s][sel]
            bb = outs[f"bbox_{s}"][0, sel]
            kp = outs[f"kps_{s}"][0, sel].reshape(-1, 5, 2)
            _check_finite(bb, kp)
            centre = (prior + bb[:, :2]) * s
            wh = np.exp(np.clip(bb[:, 2:4], -10, 10)) * s
            boxes.append(np.concatenate([centre - wh / 2, centre + wh / 2], axis=1))
            kps.append((kp + prior[:, None, :]) * s)
            scores.append(score[sel])
        if not boxes:
            return []
        all_boxes = np.concatenate(boxes) / scale
        all_kps = np.concatenate(kps) / scale
        all_scores = np.concatenate(scores)
        keep = _nms(all_boxes, all_scores, self.nms_threshold)
        return [_to_detection(all_boxes[i], all_kps[i], all_scores[i], image_bgr.shape)
                for i in keep]


def _resized_graph(path: Path, side: int) -> bytes:
    """The ONNX graph at ``path`` with a ``side`` x ``side`` input (shapes re-inferred)."""
    import onnx

    try:
        model = onnx.load(str(path))
        dims = model.graph.input[0].type.tensor_type.shape.dim
        dims[2].dim_value = side
        dims[3].dim_value = side
        for output in model.graph.output:
            output.type.tensor_type.ClearField("shape")
        del model.graph.value_info[:]
        data: bytes = model.SerializeToString()
    except Exception as exc:  # onnx raises its own types for malformed files
        raise ModelUnavailable(f"could not resize detector graph {path.name}") from exc
    return data


def _to_detection(box: np.ndarray, kps: np.ndarray, score: float,
                  shape: tuple[int, ...]) -> Detection:
    h, w = shape[:2]
    x1, y1, x2, y2 = (float(v) for v in box)
    clipped = (max(0.0, x1), max(0.0, y1), min(float(w), x2), min(float(h), y2))
    points = tuple((float(x), float(y)) for x, y in kps)
    return Detection(bbox=clipped, landmarks=points, score=float(score))


class ScrfdDetector:
    """insightface SCRFD (e.g. det_500m / det_2.5g / det_10g) via ``insightface.model_zoo``."""

    name = "scrfd"

    def __init__(self, path: Path, *, score_threshold: float = 0.5, threads: int = 2,
                 input_px: int = 640) -> None:
        import onnxruntime as ort
        from insightface.model_zoo import model_zoo

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        try:
            model = model_zoo.get_model(str(path), providers=["CPUExecutionProvider"],
                                        sess_options=options)
        except Exception as exc:
            raise ModelUnavailable(f"could not load SCRFD model {path.name}") from exc
        if model is None or type(model).__name__ != "SCRFD":
            raise ModelUnavailable(f"{path.name} is not an SCRFD detector")
        model.prepare(-1, input_size=(input_px, input_px), det_thresh=score_threshold)
        self._model = model
        self._lock = threading.Lock()  # SCRFD keeps per-call state on the instance

    def detect(self, image_bgr: np.ndarray) -> list[Detection]:
        with self._lock:
            dets, kpss = self._model.detect(image_bgr)
        if kpss is None:
            raise InferenceError("SCRFD model without keypoints cannot be used for alignment")
        _check_finite(dets, kpss)
        return [_to_detection(d[:4], k, float(d[4]), image_bgr.shape)
                for d, k in zip(dets, kpss, strict=True)]


class FakeDetector:
    """Scripted detector for fast tests: ``script(image) -> list[Detection]``."""

    name = "fake"

    def __init__(self, script: Callable[[np.ndarray], list[Detection]] | None = None) -> None:
        self._script = script or whole_image_face

    def detect(self, image_bgr: np.ndarray) -> list[Detection]:
        return self._script(image_bgr)


def whole_image_face(image_bgr: np.ndarray) -> list[Detection]:
    """One frontal face filling the image, landmarks on the ArcFace template (scaled)."""
    from gate.vision.align import ARCFACE_TEMPLATE

    h, w = image_bgr.shape[:2]
    pts = ARCFACE_TEMPLATE * np.array([w / 112.0, h / 112.0], dtype=np.float32)
    return [Detection(bbox=(0.0, 0.0, float(w), float(h)),
                      landmarks=tuple((float(x), float(y)) for x, y in pts), score=0.99)]
