"""The one face analysis pipeline: decode -> detect -> align -> quality -> age -> embed.

``FaceAnalyzer`` is used by everything that looks at faces: ``FaceGate.check`` (every
input and output image, every frame of animations and sampled video frames), enrolment,
liveness bursts and consent requests (``analyse_still``), and the evaluation tooling
(``largest_face``). Each stage hands the next a frozen value:

    bytes ──decode──► DecodedImage ──detect──► FoundFace ──align──► AlignedFace
          ──quality, age?, embed (one batch)──► AnalysedFace   (cacheable)

Decode limits come from ``Settings`` in one place (``limits_from_settings``). Analyses of
byte-identical images are cached (sha256 key, short TTL; boxes, quality, vectors, ages,
and on the check path the aligned 112x112 crops whose other test-time views are
deferred, at most ``MAX_CACHED_CROP_BYTES`` of them per image; never whole images and
never decisions), and the cache is emptied by erasure.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import numpy as np
from cachetools import TTLCache

from gate.errors import InvalidImage
from gate.imaging import DecodedImage, DecodeLimits, decode_image
from gate.imaging.video import VideoLimits, decode_video, is_video
from gate.incident.pdq import FrameHash, hash_frames
from gate.vision.age import AgeBand, AgeEstimator
from gate.vision.align import align_face, zoom_views
from gate.vision.detect import Detection, FaceDetector, box_iou
from gate.vision.embed import FaceEmbedder, FlipAveragingEmbedder
from gate.vision.quality import face_quality
from gate.vision.robust import OrientationRobustDetector

if TYPE_CHECKING:
    from concurrent.futures import Future

    from gate.settings import Settings
    from gate.vision.nudity import NudityClassifier

Box = tuple[float, float, float, float]
Point = tuple[float, float]
#: Embeddings started early on a spare core: (image, frame position, detection) -> the
#: batch's future and the face's row in it.
_Early = dict[tuple[int, int, Detection], tuple["Future[np.ndarray]", int]]
#: Most bytes of aligned crops (deferred test-time views) one cached analysis may hold:
#: an image with more faces is analysed again when it is sent again, so the cache's
#: pixels stay under ``analysis_cache_items`` MiB whatever the images hold.
MAX_CACHED_CROP_BYTES = 1 << 20


# -- staged values ----------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class FoundFace:
    """Detect: a face in one decoded frame (frame pixel coordinates)."""

    frame_index: int  # the frame's index in the file (animations, videos)
    frame_pos: int  # position in ``DecodedImage.frames`` (alpha copies share an index)
    det: Detection
    scale: float  # frame pixels per original pixel


@dataclass(frozen=True, slots=True)
class AlignedFace:
    """Align + quality: the 112x112 ArcFace-aligned crop and how identifiable it is."""

    found: FoundFace
    crop: np.ndarray = field(repr=False)
    quality: float  # 0..1 (gate.vision.quality)
    #: Zoomed crops of the same face (test-time views, ``Settings.zoom_views``).
    zoomed: tuple[np.ndarray, ...] = field(default=(), repr=False)

    @property
    def views(self) -> tuple[np.ndarray, ...]:
        """The crop, then its zoomed crops."""
        return (self.crop, *self.zoomed)


@dataclass(frozen=True, slots=True)
class AnalysedFace:
    """What leaves the pipeline: geometry in original pixels, quality, age, template.

    ``vector`` is an L2-normalised, read-only float32 template; it never leaves the
    process (no type that crosses a boundary carries it). With test-time augmentation it
    is the average of the vectors of the crop, its zoomed crops and all their mirrors,
    except on the check path, where all but the crop are deferred
    (``FaceAnalyzer.defers_mirror``): then ``vector`` is the crop's own vector and
    ``views`` keeps the aligned 112x112 crops (in memory only, never logged or returned)
    until the engine decides whether the face comes near anyone
    (``FaceAnalyzer.completed``). Otherwise the face holds no pixels.
    """

    frame_index: int
    bbox_px: Box  # x_min, y_min, x_max, y_max in the original, upright image
    landmarks_px: tuple[Point, ...]
    det_score: float
    size_px: float  # shorter side of the box, original pixels
    quality: float
    vector: np.ndarray = field(repr=False)
    age_years: float | None = None  # only when a request needed it
    age_band: AgeBand | None = None
    #: The aligned crop and its zoomed crops while their other views are deferred;
    #: empty: ``vector`` is final.
    views: tuple[np.ndarray, ...] = field(default=(), repr=False, compare=False)

    @property
    def mirror_deferred(self) -> bool:
        """The mirror and zoomed views are still to be averaged in (``completed``)."""
        return bool(self.views)


@dataclass(frozen=True, slots=True)
class ImageAnalysis:
    """Every face of one input (all frames), and, when asked, its nudity reading."""

    faces: tuple[AnalysedFace, ...]
    with_age: bool
    sexual: bool | None = None  # None: not screened
    #: PDQ hashes of every decoded frame (``core.known_image``); None: not hashed.
    pdq: tuple[FrameHash, ...] | None = None


@dataclass(frozen=True, slots=True)
class StillAnalysis:
    """One still picture (enrolment photo, liveness frame, consent-request image)."""

    faces: tuple[AnalysedFace, ...]
    pixel_digest: str  # sha256 of the decoded pixels (not of the file bytes)
    thumb: np.ndarray = field(repr=False)  # 32x32 grey thumbnail, float32


@dataclass(slots=True)
class StageTimer:
    """Milliseconds per named stage (summed when a stage runs more than once)."""

    stages: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            elapsed = (time.perf_counter() - started) * 1000
            self.stages[name] = round(self.stages.get(name, 0.0) + elapsed, 3)


def limits_from_settings(settings: Settings) -> tuple[DecodeLimits, VideoLimits]:
    """The decode limits of images and videos: the one place they are derived."""
    images = DecodeLimits(
        max_bytes=settings.max_image_bytes, max_pixels=settings.max_image_pixels,
        max_side_px=settings.max_side_px, max_frames=settings.max_frames,
        max_total_pixels=settings.max_total_pixels, target_side_px=settings.decode_side_px)
    videos = VideoLimits(
        max_bytes=settings.max_video_bytes, max_duration_s=settings.max_video_seconds,
        max_sampled_frames=settings.max_video_frames,
        sample_every_s=settings.video_sample_every_s, max_decode_s=settings.check_timeout_s)
    return images, videos


class FaceAnalyzer:
    """The pipeline (see module doc). Thread-safe; models are shared, not copied."""

    def __init__(self, detector: FaceDetector, embedder: FaceEmbedder, age: AgeEstimator, *,
                 limits: DecodeLimits, video_limits: VideoLimits,
                 nudity: NudityClassifier | None = None, cache_items: int = 256,
                 cache_ttl_s: float = 60.0, defer_mirror: bool = False,
                 zooms: tuple[float, ...] = ()) -> None:
        self.detector = detector
        self.embedder = embedder
        #: With a test-time-augmenting embedder, each face is also cut at these zooms
        #: and all views are averaged (``FlipAveragingEmbedder.embed_views``).
        self._tta = embedder if isinstance(embedder, FlipAveragingEmbedder) else None
        self.zooms = tuple(zooms) if self._tta is not None else ()
        #: ``analyse`` (the check path) embeds each crop alone and leaves the mirror and
        #: zoomed views to ``completed``, which the engine calls only for faces whose
        #: similarities come near a decision threshold. Enrolment and the other stills
        #: always get the averaged vector.
        self._flip = self._tta if defer_mirror else None
        #: With deferred mirrors and an orientation-robust detector that has spare cores:
        #: the faces of the two detector passes are embedded on a spare core while the
        #: orientation check runs; a face the check leaves as it was keeps that vector.
        self._early = detector if self._flip is not None and isinstance(
            detector, OrientationRobustDetector) and detector.pool is not None else None
        self.age = age
        self.nudity = nudity
        self.limits = limits
        self.video_limits = video_limits
        self._still_limits = replace(limits, max_frames=1)
        self._cache: TTLCache[str, ImageAnalysis] | None = (
            TTLCache(maxsize=cache_items, ttl=cache_ttl_s)
            if cache_items > 0 and cache_ttl_s > 0 else None)
        self._cache_lock = threading.Lock()
        self.cache_hits = 0
        self.cache_misses = 0

    @property
    def pack_id(self) -> str:
        return self.embedder.pack_id

    @property
    def defers_mirror(self) -> bool:
        """``analyse`` leaves the mirror and zoomed views to ``completed``."""
        return self._flip is not None

    @property
    def dim(self) -> int:
        return self.embedder.dim

    # -- requests -----------------------------------------------------------------------
    def analyse(self, images: Sequence[bytes], *, need_age: bool = False,
                need_nudity: bool = False, need_pdq: bool = False,
                timer: StageTimer | None = None) -> list[ImageAnalysis]:
        """One ``ImageAnalysis`` per input (image or video), in order.

        Byte-identical inputs analysed recently come from the cache, unless this request
        needs what the cached analysis lacks (ages, the nudity reading, PDQ hashes).
        """
        timer = timer or StageTimer()
        out: list[ImageAnalysis | None] = []
        fresh: list[tuple[int, str, DecodedImage]] = []
        for i, data in enumerate(images):
            key = hashlib.sha256(data).hexdigest()
            cached = self._cached(key)
            if cached is not None and ((need_age and not cached.with_age)
                                       or (need_nudity and cached.sexual is None)
                                       or (need_pdq and cached.pdq is None)):
                cached = None
            out.append(cached)
            if cached is None:
                with timer.stage("decode"):
                    decoded = self.decode(data)
                fresh.append((i, key, decoded))
        if fresh:
            found = []
            early: _Early = {}
            with timer.stage("detect"):
                for n, (_, _, decoded) in enumerate(fresh):
                    found.append(self.detect(decoded, early=early, image=n))
            analyses = self._finish([d for _, _, d in fresh], found, need_age=need_age,
                                    need_nudity=need_nudity, need_pdq=need_pdq, timer=timer,
                                    defer_mirror=self._flip is not None, early=early)
            for (i, key, _), analysis in zip(fresh, analyses, strict=True):
                out[i] = analysis
                self._store(key, analysis)
        return [a for a in out if a is not None]

    def analyse_still(self, data: bytes, *, what: str = "picture") -> StillAnalysis:
        """Faces, pixel digest and thumbnail of one still picture (first frame only)."""
        try:
            decoded = decode_image(data, self._still_limits)
        except InvalidImage as exc:
            raise type(exc)(f"{what}: {exc.message}") from exc
        frame = decoded.frames[0]
        [analysis] = self._finish([decoded], [self.detect(decoded, first_only=True)],
                                  need_age=False, need_nudity=False, timer=StageTimer())
        digest = hashlib.sha256(np.ascontiguousarray(frame.pixels).tobytes()).hexdigest()
        return StillAnalysis(analysis.faces, digest, _thumb(frame.pixels))

    def largest_face(self, data: bytes) -> AnalysedFace | None:
        """The largest face of a still picture (evaluation tooling)."""
        faces = self.analyse_still(data).faces
        return max(faces, key=lambda f: f.size_px) if faces else None

    # -- stages ---------------------------------------------------------------------------
    def decode(self, data: bytes) -> DecodedImage:
        """Images (every frame of an animation) or videos (sampled frames)."""
        if is_video(data):
            return decode_video(data, self.video_limits)
        return decode_image(data, self.limits)

    def detect(self, decoded: DecodedImage, *, first_only: bool = False,
               early: _Early | None = None, image: int = 0) -> list[FoundFace]:
        found: list[FoundFace] = []
        for pos, frame in enumerate(decoded.frames):
            if first_only and frame.index != decoded.frames[0].index:
                continue
            if early is not None and self._early is not None:
                dets = self._early.detect(frame.pixels,
                                          early=self._embed_early(frame.pixels, image, pos, early))
            else:
                dets = self.detector.detect(frame.pixels)
            found += [FoundFace(frame.index, pos, det, frame.scale) for det in dets]
        return _dedupe(found)

    def _embed_early(self, pixels: np.ndarray, image: int, pos: int, into: _Early
                     ) -> Callable[[list[Detection]], None]:
        """What the detector calls with its faces before the orientation check: their
        crops are cut and embedded on a spare core, if one is free (never queued)."""
        def start(dets: list[Detection]) -> None:
            spare = self._early.pool if self._early is not None else None
            flip = self._flip
            if spare is None or flip is None:
                return  # not reached: ``_early`` is set only with both

            def embed(faces: list[Detection]) -> np.ndarray:
                return flip.embed_single([align_face(pixels, d.landmarks_array())[0]
                                          for d in faces])

            future = spare.try_submit(embed, dets)
            if future is not None:
                for row, det in enumerate(dets):
                    into[(image, pos, det)] = (future, row)
        return start

    def completed(self, faces: Sequence[AnalysedFace]) -> np.ndarray:
        """The averaged vectors of ``faces`` (one row each; one batch for the deferred
        views of those whose views were deferred)."""
        out = np.stack([f.vector for f in faces]) if faces else \
            np.zeros((0, self.embedder.dim), np.float32)
        todo = [i for i, f in enumerate(faces) if f.views]
        if todo and self._flip is not None:
            out = out.copy()
            out[todo] = self._flip.complete([faces[i].views for i in todo], out[todo])
        return out

    def _finish(self, decoded: Sequence[DecodedImage], found: Sequence[list[FoundFace]], *,
                need_age: bool, need_nudity: bool, timer: StageTimer,
                need_pdq: bool = False, defer_mirror: bool = False,
                early: _Early | None = None) -> list[ImageAnalysis]:
        """Align, score, estimate ages (when needed) and embed all faces in one batch."""
        aligned: list[list[AlignedFace]] = []
        with timer.stage("align"):
            for image, image_found in zip(decoded, found, strict=True):
                aligned.append([_align(image.frames[f.frame_pos].pixels, f, self.zooms)
                                for f in image_found])
        ages: dict[tuple[int, int], tuple[float | None, AgeBand]] = {}
        if need_age:
            with timer.stage("age"):
                for i, (image, image_aligned) in enumerate(zip(decoded, aligned, strict=True)):
                    for j, face in enumerate(image_aligned):
                        det = face.found.det
                        estimate = self.age.estimate(image.frames[face.found.frame_pos].pixels,
                                                     det.bbox, det.landmarks_array(), face.crop)
                        years = None if estimate.years != estimate.years else estimate.years
                        ages[(i, j)] = (years, estimate.band)
        flat = [face for faces in aligned for face in faces]
        defer = defer_mirror and self._flip is not None
        with timer.stage("embed"):
            if not flat:
                vectors = np.zeros((0, self.embedder.dim), np.float32)
            elif defer:
                where = [(i, face.found.frame_pos, face.found.det)
                         for i, faces in enumerate(aligned) for face in faces]
                vectors = self._embed_single(flat, where, early or {})
            elif self._tta is not None:
                vectors = self._tta.embed_views([f.views for f in flat])
            else:
                vectors = self.embedder.embed([f.crop for f in flat])
        sexual: list[bool | None] = [None] * len(decoded)
        if need_nudity and self.nudity is not None:
            with timer.stage("nudity"):
                sexual = [any(self.nudity.score(f.pixels).is_sexual for f in image.frames)
                          for image in decoded]
        pdq: list[tuple[FrameHash, ...] | None] = [None] * len(decoded)
        if need_pdq:
            with timer.stage("pdq"):
                pdq = [tuple(hash_frames(image)) for image in decoded]
        out: list[ImageAnalysis] = []
        n = 0
        for i, image_aligned in enumerate(aligned):
            analysed = []
            for j, face in enumerate(image_aligned):
                vector = np.array(vectors[n], dtype=np.float32)
                vector.setflags(write=False)
                n += 1
                years, band = ages.get((i, j), (None, None))
                analysed.append(_analysed(face, vector, years, band, keep_views=defer))
            out.append(ImageAnalysis(tuple(analysed), with_age=need_age, sexual=sexual[i],
                                     pdq=pdq[i]))
        return out

    def _embed_single(self, flat: Sequence[AlignedFace],
                      where: Sequence[tuple[int, int, Detection]], early: _Early) -> np.ndarray:
        """Each crop's own vector: from the early embedding when its face came out of the
        detector unchanged (same landmarks, so the same crop), else embedded now."""
        assert self._flip is not None
        out = np.zeros((len(flat), self.embedder.dim), np.float32)
        rest: list[int] = []
        for n, key in enumerate(where):
            started = early.get(key)
            if started is not None and started[0].exception() is None:
                out[n] = started[0].result()[started[1]]
            else:  # not started early, or it failed: embed now (a real fault fails here)
                rest.append(n)
        if rest:
            out[rest] = self._flip.embed_single([flat[n].crop for n in rest])
        return out

    # -- cache ----------------------------------------------------------------------------
    def _cached(self, key: str) -> ImageAnalysis | None:
        if self._cache is None:
            return None
        with self._cache_lock:
            found = self._cache.get(key)
            if found is None:
                self.cache_misses += 1
            else:
                self.cache_hits += 1
            return found

    def _store(self, key: str, analysis: ImageAnalysis) -> None:
        if self._cache is not None and cacheable(analysis):
            with self._cache_lock:
                self._cache[key] = analysis

    def clear_cache(self) -> None:
        """Forget every cached analysis (erasure, tests)."""
        if self._cache is not None:
            with self._cache_lock:
                self._cache.clear()

    @property
    def cached_items(self) -> int:
        if self._cache is None:
            return 0
        with self._cache_lock:
            self._cache.expire()
            return len(self._cache)


def cacheable(analysis: ImageAnalysis) -> bool:
    """Whether the analysis cache may keep ``analysis`` (``MAX_CACHED_CROP_BYTES``)."""
    held = sum(view.nbytes for face in analysis.faces for view in face.views)
    return held <= MAX_CACHED_CROP_BYTES


def _align(pixels: np.ndarray, found: FoundFace, zooms: tuple[float, ...] = ()
           ) -> AlignedFace:
    landmarks = found.det.landmarks_array()
    crop, points = align_face(pixels, landmarks)
    return AlignedFace(found, crop, face_quality(found.det, crop, points).score,
                       zoom_views(pixels, landmarks, zooms))


def _analysed(face: AlignedFace, vector: np.ndarray, years: float | None,
              band: AgeBand | None, *, keep_views: bool = False) -> AnalysedFace:
    det, scale = face.found.det, face.found.scale
    x1, y1, x2, y2 = (v / scale for v in det.bbox)
    return AnalysedFace(
        frame_index=face.found.frame_index, bbox_px=(x1, y1, x2, y2),
        landmarks_px=tuple((x / scale, y / scale) for x, y in det.landmarks),
        det_score=det.score, size_px=det.size_px / scale, quality=face.quality,
        vector=vector, age_years=years, age_band=band,
        views=face.views if keep_views else ())


def _dedupe(faces: list[FoundFace]) -> list[FoundFace]:
    """Alpha-composited duplicates of a frame share an index; keep each box once."""
    kept: list[FoundFace] = []
    for face in faces:
        if any(k.frame_index == face.frame_index and box_iou(k.det.bbox, face.det.bbox) > 0.8
               for k in kept):
            continue
        kept.append(face)
    return kept


def _thumb(pixels: np.ndarray) -> np.ndarray:
    import cv2

    grey = cv2.cvtColor(pixels, cv2.COLOR_BGR2GRAY)
    small = cv2.resize(grey, (32, 32), interpolation=cv2.INTER_AREA)
    return np.asarray(small, dtype=np.float32)
