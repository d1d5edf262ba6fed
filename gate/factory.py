"""``build_gate(settings)``: wires the parts chosen by settings into a ``FaceGate``.

Heavy backends (onnxruntime, OpenCV, insightface, SQLAlchemy engines) are imported here,
lazily, so ``import gate`` stays fast.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from gate.errors import ModelUnavailable
from gate.settings import Settings

if TYPE_CHECKING:
    from gate.engine import FaceGate
    from gate.identity.index import IdentityIndex
    from gate.vision.age import AgeEstimator
    from gate.vision.detect import FaceDetector
    from gate.vision.embed import FaceEmbedder
    from gate.vision.nudity import NudityClassifier
    from gate.vision.robust import SpareCores


def _threads(settings: Settings) -> int:
    """onnxruntime intra-op threads: 1 by default. Measured on 2 cores (benchmarks/
    check_latency.py): 1 thread per session gave 22.5 checks/s with 2 workers against 11.0
    with 2 threads (the sessions and OpenCV fight over the cores), and equal latency."""
    return settings.ort_threads or 1


def build_detector(settings: Settings) -> FaceDetector:
    from gate.vision import detect, packs

    if settings.detector == "fake":
        return detect.FakeDetector()
    if settings.detector == "scrfd":
        return _scrfd(settings)
    path = packs.prepared_default("detector", settings.resolved_model_cache())
    return detect.YuNetDetector(path, score_threshold=settings.det_score_threshold,
                                threads=_threads(settings))


def _scrfd(settings: Settings) -> FaceDetector:
    from gate.vision import detect, packs

    if settings.scrfd_model is None:
        raise ModelUnavailable("an SCRFD detector needs GATE_SCRFD_MODEL=/path/to/det_*.onnx")
    path, _ = packs.verify_user_model(settings.scrfd_model, role="detector",
                                      pinned_sha256=settings.scrfd_sha256,
                                      accepted_license=settings.accept_license)
    return detect.ScrfdDetector(path, score_threshold=settings.det_score_threshold,
                                threads=_threads(settings), input_px=settings.det_input_px)


@functools.cache
def _spare_cores() -> SpareCores:
    """One process-wide set of spare threads: one fewer than the cores (at least one),
    used only while fewer checks detect than there are cores."""
    from gate.vision.robust import SpareCores

    cores = os.cpu_count() or 2
    return SpareCores(cores - 1, cores)


def build_robust_detector(settings: Settings) -> FaceDetector:
    """The configured detector, wrapped for rotations and tight crops when enabled, plus
    the optional second detector. With YuNet, the orientation check (and the mosaic
    probe when ``orientation_probe_px`` is not 640) run YuNet at a smaller input."""
    from gate.vision.robust import OrientationRobustDetector, UnionDetector

    base = build_detector(settings)
    detector: FaceDetector = base
    if settings.detect_orientations and settings.detector != "fake":
        probe: FaceDetector | None = None
        checker: FaceDetector | None = None
        if settings.detector == "yunet":
            from gate.vision import detect, packs

            path = packs.prepared_default("detector", settings.resolved_model_cache())

            def yunet(side: int) -> FaceDetector:
                return detect.YuNetDetector(path, score_threshold=settings.det_score_threshold,
                                            threads=_threads(settings), input_px=side)

            checker = yunet(settings.orientation_check_px)
            if settings.orientation_probe_px == settings.orientation_check_px:
                probe = checker
            elif settings.orientation_probe_px != 640:
                probe = yunet(settings.orientation_probe_px)
        detector = OrientationRobustDetector(
            base, probe=probe, probe_px=settings.orientation_probe_px if probe else None,
            checker=checker, checker_px=settings.orientation_check_px if checker else None,
            check_orientation=settings.orientation_check,
            second_look_below_px=float(settings.small_face_second_look_px))
        if checker is not None:
            detector.orient_cell_px = settings.orientation_check_px // 2
        if settings.parallel_passes:
            detector.pool = _spare_cores()
    if settings.second_detector == "scrfd" and settings.detector != "fake":
        detector = UnionDetector(detector, _scrfd(settings))
    return detector


def build_embedder(settings: Settings) -> FaceEmbedder:
    from gate.vision import embed, packs

    if settings.embedder == "fake":
        return embed.FakeEmbedder()
    if settings.embedder == "arcface":
        if settings.arcface_model is None:
            raise ModelUnavailable(
                "embedder=arcface needs GATE_ARCFACE_MODEL=/path/to/w600k_*.onnx")
        path, digest = packs.verify_user_model(settings.arcface_model, role="recognizer",
                                               pinned_sha256=settings.arcface_sha256,
                                               accepted_license=settings.accept_license)
        return embed.ArcFaceEmbedder(path, digest=digest, threads=_threads(settings))
    path = packs.prepared_default("recognizer", settings.resolved_model_cache())
    return embed.SFaceEmbedder(path, runtime=settings.sface_runtime, threads=_threads(settings))


def build_age_estimator(settings: Settings) -> AgeEstimator:
    from gate.vision import age

    if settings.age_model == "none":
        return age.NoAgeEstimator("disabled by settings")
    if settings.age_model == "fake" or settings.detector == "fake":
        return age.FakeAgeEstimator(35.0, margin_years=settings.age_margin_years)
    return age.load_age_estimator(margin_years=settings.age_margin_years)


def build_nudity(settings: Settings) -> NudityClassifier | None:
    if not settings.output_nudity:
        return None
    from gate.vision.nudity import load_nudity_classifier

    classifier = load_nudity_classifier(accepted_license=settings.accept_nudity_license)
    if classifier is None:
        raise ModelUnavailable("output_nudity is on but the nudity model is not installed: "
                               "pip install 'consent-gate[nudity]'")
    return classifier


def build_index(settings: Settings, dim: int, expected_templates: int, *,
                keys: Sequence[bytes] = (), pack_id: str = "") -> IdentityIndex:
    """Exact or HNSW, by setting or (``auto``) by how many templates are enrolled; or the
    shared Milvus index (``milvus``), whose templates are protected with a rotation
    derived from the active template key (``keys``) and kept per model pack."""
    from gate.identity.ann import choose_index
    from gate.identity.index import ExactIndex

    if settings.index == "milvus":
        from gate.identity.milvus import MilvusIndex
        from gate.identity.protection import TemplateProtector

        return MilvusIndex(settings.resolved_milvus_uri(), dim,
                           TemplateProtector.from_keyring(list(keys), dim), pack_id=pack_id,
                           timeout_s=settings.milvus_timeout_s)
    if settings.index == "exact":
        return ExactIndex(dim)
    if settings.index == "hnsw":
        from gate.identity.ann import HnswIndex

        return HnswIndex(dim)
    return choose_index(dim, expected_templates)


def build_gate(settings: Settings, **given: Any) -> FaceGate:
    """Open the database (migrated to the newest schema), verify and load the models,
    validate the policy, and wire a ``FaceGate``. Parts passed by name (``detector=...``,
    ``embedder=...``: any field of ``gate.engine.Parts``) are used instead of the ones the
    settings choose (tests, custom integrations)."""
    from gate.audit.chain import SqlAuditSink
    from gate.consent.store import SqlConsentStore
    from gate.consent.tokens import GrantTokens, SigningKeyring
    from gate.db import make_engine
    from gate.db.migrate import ensure_schema
    from gate.durable import private_dir
    from gate.engine import FaceGate, Parts
    from gate.identity.templates import TemplateCipher, load_keyring, load_or_create_key
    from gate.imaging.decode import BUDGET
    from gate.policy.jurisdictions import PolicyLibrary

    BUDGET.capacity = settings.decode_budget_pixels
    from gate.incident.pdq import pdq_backend

    pdq_backend()  # a misspelt or missing PDQ backend stops start-up, not a check
    policy = given.pop("policy", None) or PolicyLibrary(settings.policy_file)
    detector = given.pop("detector", None) or build_robust_detector(settings)
    embedder = given.pop("embedder", None)
    if embedder is None:
        embedder = build_embedder(settings)
        if settings.flip_tta and settings.embedder != "fake":
            from gate.vision.embed import FlipAveragingEmbedder

            embedder = FlipAveragingEmbedder(embedder)
        if settings.batch_window_ms:
            from gate.batching import BatchingEmbedder

            embedder = BatchingEmbedder(embedder, window_ms=settings.batch_window_ms,
                                        max_items=4 * settings.check_workers)
    age = given.pop("age", None) or build_age_estimator(settings)
    nudity = given.pop("nudity", None) or build_nudity(settings)
    if not settings.database_url:
        private_dir(settings.data_dir)
    engine = make_engine(settings.resolved_database_url())
    ensure_schema(engine, auto_migrate=settings.auto_migrate)
    store = SqlConsentStore(engine)
    keys = load_keyring(settings.resolved_key_file())
    audit_key = load_or_create_key(settings.resolved_key_file().with_name("audit.key"))
    tokens = GrantTokens(engine, SigningKeyring(settings.resolved_signing_key_file()),
                         token_ttl_s=settings.consent_token_ttl_s,
                         resync_s=settings.consent_revocation_resync_s)
    index = given.pop("index", None)  # an empty index is falsy: no ``or`` here
    if index is None:
        index = build_index(settings, embedder.dim, store.template_count(), keys=keys,
                            pack_id=embedder.pack_id)
    parts = Parts(
        detector=detector, embedder=embedder, age=age,
        index=index,
        store=store, policy=policy, audit=SqlAuditSink(engine),
        cipher=TemplateCipher(keys), audit_key=audit_key, nudity=nudity, tokens=tokens,
        mark_keys=tuple(load_keyring(settings.resolved_mark_key_file())),
    )
    if given:
        parts = dataclasses.replace(parts, **given)
    return FaceGate(parts, settings)
