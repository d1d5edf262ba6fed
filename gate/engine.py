"""FaceGate: the one engine. SDK, CLI, HTTP and proxy all call ``FaceGate.check``.

decode -> detect -> align -> quality -> embed (one batch) -> identify (1:N index + consent
store) -> screen text -> policy -> use counting -> audit. Any failure inside the decision
path ends in a ``deny`` naming the fault class, or in a raised ``GateError`` for input the
caller must fix (bad image, bad request). No code path turns an exception into ``allow``.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import logging
import threading
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from gate.audit.chain import AuditSink, subject_ref
from gate.cache import TtlCache
from gate.consent.store import ConsentStore, utcnow
from gate.errors import (
    ConsentError,
    EnrollmentError,
    GateClosed,
    GateError,
    InvalidImage,
    InvalidRequest,
    ModelMismatch,
    NotFound,
)
from gate.identity.index import IdentityIndex
from gate.identity.templates import TemplateCipher
from gate.imaging import DecodedImage, DecodeLimits, decode_image
from gate.imaging.video import VideoLimits, decode_video, is_video
from gate.policy.evaluate import FaceFacts, PolicyEngine, RequestFacts
from gate.settings import Settings
from gate.types import (
    CONTENT_CATEGORIES,
    OPERATIONS,
    AuditVerification,
    ConsentNeed,
    Decision,
    FaceResult,
    GateRequest,
    Grant,
    ImageInput,
    Reason,
    Requester,
    Subject,
    SubjectStatus,
)
from gate.vision.age import AgeEstimator
from gate.vision.align import align_face
from gate.vision.detect import Detection, FaceDetector, box_iou
from gate.vision.embed import FaceEmbedder
from gate.vision.nudity import NudityClassifier
from gate.vision.quality import face_quality

log = logging.getLogger("gate")


@dataclass(slots=True)
class _Face:
    """A face found in an input, on its way through the pipeline."""

    image_index: int
    frame_index: int
    role: str
    det: Detection
    scale: float
    pixels: np.ndarray | None
    quality: float = 0.0
    crop: np.ndarray | None = None
    vector: np.ndarray | None = None
    age_years: float | None = None  # estimated only when a request needs it
    age_band: str | None = None


@dataclass(slots=True)
class _Timer:
    stages: dict[str, float] = field(default_factory=dict)

    def add(self, stage: str, started: float) -> float:
        now = time.perf_counter()
        self.stages[stage] = round(self.stages.get(stage, 0.0) + (now - started) * 1000, 3)
        return now


@dataclass(frozen=True, slots=True)
class Parts:
    """The swappable parts a FaceGate is built from (see ``gate.factory``)."""

    detector: FaceDetector
    embedder: FaceEmbedder
    age: AgeEstimator
    index: IdentityIndex
    store: ConsentStore
    policy: PolicyEngine
    audit: AuditSink
    cipher: TemplateCipher
    audit_key: bytes
    #: Optional output nudity classifier (``check_output`` only); None: not configured.
    nudity: NudityClassifier | None = None


class FaceGate:
    """Decides whether a generation request may use the faces in it."""

    def __init__(self, parts: Parts, settings: Settings) -> None:
        self.parts = parts
        self.settings = settings
        self._closed = False
        self._lock = threading.RLock()
        self._names_cache: tuple[int, Any] | None = None
        # Decisions run on workers so a hung model call ends in a deny after the timeout.
        self._workers = concurrent.futures.ThreadPoolExecutor(
            max_workers=settings.check_workers, thread_name_prefix="gate-check")
        self._analyses: TtlCache[tuple[_Face, ...]] = TtlCache(
            settings.analysis_cache_items, settings.analysis_cache_ttl_s)
        self._feed_seq = 0
        self._foreign_packs: set[str] = set()
        self._limits = DecodeLimits(
            max_bytes=settings.max_image_bytes, max_pixels=settings.max_image_pixels,
            max_side_px=settings.max_side_px, max_frames=settings.max_frames,
            max_total_pixels=settings.max_total_pixels, target_side_px=settings.decode_side_px,
        )
        self._video_limits = VideoLimits(
            max_bytes=settings.max_video_bytes, max_duration_s=settings.max_video_seconds,
            max_sampled_frames=settings.max_video_frames,
            sample_every_s=settings.video_sample_every_s,
            max_decode_s=settings.check_timeout_s)
        self._load_index()

    # -- construction -------------------------------------------------------------------
    @classmethod
    def open(cls, data_dir: str | Path = "data", **overrides: Any) -> FaceGate:
        """The embedded default: SQLite and a local index in ``data_dir``."""
        from gate.factory import build_gate

        return build_gate(Settings(data_dir=Path(data_dir), **overrides))

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> FaceGate:
        from gate.factory import build_gate

        return build_gate(settings or Settings())

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True  # first: no decision is made from here on
                self._workers.shutdown(wait=False, cancel_futures=True)
                self._analyses.clear()
                for step in (self._save_persisted_index, self.parts.index.clear,
                             self.parts.store.close):
                    try:
                        step()
                    except Exception:  # close every part regardless
                        log.exception("error while closing the gate")

    def __enter__(self) -> FaceGate:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _check_open(self) -> None:
        if self._closed:
            raise GateClosed("this FaceGate is closed")

    def _load_index(self) -> None:
        """Build the index from the store, then follow the change feed from its head."""
        pack = self.parts.embedder.pack_id
        with self._lock:
            self._feed_seq = self.parts.store.epoch()
            others = self.parts.store.template_packs() - {pack}
            if others:
                log.warning("templates from other model packs need re-enrolment",
                            extra={"packs": sorted(others)})
            self._foreign_packs = others
            if self._load_persisted_index():
                return
            self.parts.index.clear()
            for subject_id, blob in self.parts.store.iter_templates(pack):
                vec = self.parts.cipher.decrypt(blob, subject_id=subject_id, pack_id=pack)
                self.parts.index.add(subject_id, vec[None, :])

    def _load_persisted_index(self) -> bool:
        """Opt-in (``index_file``): open the saved HNSW index; ``sync`` replays the rest."""
        from gate.identity.ann import HnswIndex

        path = self.settings.index_file
        if path is None or not path.is_file() or not isinstance(self.parts.index, HnswIndex):
            return False
        try:
            index = HnswIndex.load(path, view=True)
        except GateError:
            log.warning("the saved identity index is unusable; rebuilding from the store")
            return False
        if index.checkpoint is None or index.checkpoint > self._feed_seq or \
                index.dim != self.parts.embedder.dim:
            return False
        self.parts = dataclasses.replace(self.parts, index=index)
        self._feed_seq = index.checkpoint
        self.sync()
        return True

    def _drop_persisted_index(self) -> None:
        """Erasure: a saved index may hold the erased person's templates; delete it."""
        from gate.identity.ann import SIDE_TABLE_SUFFIX

        path = self.settings.index_file
        if path is not None:
            for victim in (path, path.with_name(path.name + SIDE_TABLE_SUFFIX)):
                victim.unlink(missing_ok=True)

    def _save_persisted_index(self) -> None:
        from gate.identity.ann import HnswIndex

        path = self.settings.index_file
        if path is not None and isinstance(self.parts.index, HnswIndex):
            self.parts.index.save(path, checkpoint=self._feed_seq)

    def sync(self) -> int:
        """Apply consent changes made elsewhere (other replicas or processes).

        Reads the change feed after the last applied sequence number, so nothing is lost
        and applying a change twice is harmless. Returns the number of changes applied.
        """
        with self._lock:
            changes = self.parts.store.changes_since(self._feed_seq)
            pack = self.parts.embedder.pack_id
            for seq, kind, subject_id in changes:
                if kind == "subject_delete":
                    self._analyses.clear()  # erasure elsewhere empties caches here too
                    self._drop_persisted_index()
                if subject_id is not None and kind in ("subject_add", "subject_delete"):
                    self.parts.index.remove(subject_id)
                    if kind == "subject_add":
                        self._add_templates(subject_id, pack)
                self._feed_seq = seq
            return len(changes)

    def _add_templates(self, subject_id: str, pack: str) -> None:
        blobs = self.parts.store.subject_templates(subject_id, pack)
        if blobs:
            vectors = [self.parts.cipher.decrypt(b, subject_id=subject_id, pack_id=pack)
                       for b in blobs]
            self.parts.index.add(subject_id, np.stack(vectors))

    # -- enrolment and consent ---------------------------------------------------------
    def enroll(self, images: Sequence[bytes], display_name: str,
               status: SubjectStatus = "protected", owner: Requester | None = None,
               aliases: Sequence[str] = (), guardian: bool = False) -> Subject:
        """Enrol one person from photos that each show exactly one face."""
        self._check_open()
        if not images:
            raise EnrollmentError("enrolment needs at least one photo")
        if status not in ("protected", "consenting"):
            raise InvalidRequest("status must be 'protected' or 'consenting'", field="status")
        name = display_name.strip()
        if not name or len(name) > 200:
            raise InvalidRequest("display_name must be 1-200 characters", field="display_name")
        vectors = [self._enrolment_vector(data, i) for i, data in enumerate(images)]
        subject = Subject(
            subject_id=f"sub_{uuid.uuid4().hex[:20]}", display_name=name, status=status,
            owner=owner, aliases=[a.strip() for a in aliases if a.strip()],
            model_pack=self.parts.embedder.pack_id, template_count=len(vectors),
            guardian=guardian, created_at=utcnow(),
        )
        pack = self.parts.embedder.pack_id
        blobs = [self.parts.cipher.encrypt(v, subject_id=subject.subject_id, pack_id=pack)
                 for v in vectors]
        self.parts.store.add_subject(subject, blobs, self.parts.cipher.key_id)
        self.sync()
        self._audit_event("enroll", subject_ids=[subject.subject_id])
        return subject

    def _enrolment_vector(self, data: bytes, position: int) -> np.ndarray:
        try:
            decoded = decode_image(data, self._limits)
        except InvalidImage as exc:
            raise type(exc)(f"enrolment photo {position}: {exc.message}") from exc
        faces = [f for f in self._detect(decoded, 0, "reference") if f.frame_index == 0]
        if len(faces) != 1:
            what = "no face" if not faces else f"{len(faces)} faces"
            raise EnrollmentError(f"enrolment photo {position} shows {what}; it must show "
                                  "exactly one face")
        face = faces[0]
        self._prepare(face)
        if face.det.size_px / face.scale < self.settings.min_face_px:
            raise EnrollmentError(f"enrolment photo {position}: the face is too small")
        vector: np.ndarray = self.parts.embedder.embed([face.crop])[0]  # type: ignore[list-item]
        return vector

    def largest_face_vector(self, data: bytes) -> tuple[np.ndarray, float] | None:
        """Template and quality of the largest face (evaluation tooling; never exposed)."""
        decoded = decode_image(data, self._limits)
        faces = self._detect(decoded, 0, "reference")
        if not faces:
            return None
        face = max(faces, key=lambda f: f.det.size_px)
        self._prepare(face)
        return self.parts.embedder.embed([face.crop])[0], face.quality  # type: ignore[list-item]

    def get_subject(self, subject_id: str) -> Subject:
        subject = self.parts.store.get_subject(subject_id)
        if subject is None:
            raise NotFound("no such subject")
        return subject

    def list_subjects(self) -> list[Subject]:
        return self.parts.store.list_subjects()

    def set_status(self, subject_id: str, status: SubjectStatus) -> Subject:
        subject = self.parts.store.set_status(subject_id, status)
        self._audit_event("set_status", subject_ids=[subject_id], detail=status)
        return subject

    def grant(self, subject_id: str, *, app_id: str, operations: Iterable[str],
              content: Iterable[str] = ("general",), user_id: str | None = None,
              purpose: str | None = None, expires_at: datetime | None = None,
              not_before: datetime | None = None, max_uses: int | None = None) -> Grant:
        """Record a consent grant for ``subject_id`` (durable before it returns)."""
        self._check_open()
        ops = list(dict.fromkeys(operations))
        cats = list(dict.fromkeys(content))
        bad = [o for o in ops if o not in OPERATIONS] + [c for c in cats if c not in
                                                           CONTENT_CATEGORIES]
        if bad or not ops or not cats:
            raise ConsentError("a grant needs known, non-empty operations and content")
        if max_uses is not None and not 1 <= max_uses <= 2**31 - 1:
            raise ConsentError("max_uses must be between 1 and 2147483647")
        grant = Grant(
            grant_id=f"gr_{uuid.uuid4().hex[:20]}", subject_id=subject_id, app_id=app_id,
            user_id=user_id, operations=ops, content=cats, purpose=purpose,
            not_before=_utc(not_before), expires_at=_utc(expires_at), max_uses=max_uses,
            created_at=utcnow(),
        )
        self.parts.store.add_grant(grant)
        self._audit_event("grant", subject_ids=[subject_id], detail=grant.grant_id)
        return grant

    def revoke(self, grant_id: str) -> Grant:
        """Revoke at once; the grant never allows again."""
        grant = self.parts.store.revoke_grant(grant_id, utcnow())
        self._audit_event("revoke", subject_ids=[grant.subject_id], detail=grant_id)
        return grant

    def list_grants(self, subject_id: str | None = None) -> list[Grant]:
        return self.parts.store.list_grants(subject_id)

    def erase(self, subject_id: str) -> bool:
        """Erase a subject: rows, templates, grants, index entries. Audit keeps hashes."""
        found = self.parts.store.delete_subject(subject_id)
        self.parts.index.remove(subject_id)
        self._analyses.clear()
        self._drop_persisted_index()
        self.sync()
        if not found:
            raise NotFound("no such subject")
        self._audit_event("erase", subject_ids=[subject_id])
        return True

    def rotate_template_key(self) -> int:
        """Re-encrypt every template under a new key; returns the number re-encrypted.

        Crash-safe order: the new key is added to the keyring file first (old keys kept),
        then all rows are re-encrypted in one transaction, then old keys are dropped.
        """
        from gate.identity.templates import TemplateCipher, add_active_key, drop_inactive_keys

        key_file = self.settings.resolved_key_file()
        with self._lock:
            new_cipher = TemplateCipher(add_active_key(key_file))
            old_cipher = self.parts.cipher

            def reseal(subject_id: str, pack: str, blob: bytes) -> bytes | None:
                if not new_cipher.needs_rotation(blob):
                    return None
                vec = old_cipher.decrypt(blob, subject_id=subject_id, pack_id=pack)
                return new_cipher.encrypt(vec, subject_id=subject_id, pack_id=pack)

            count = self.parts.store.rewrite_templates(reseal)
            drop_inactive_keys(key_file)
            self.parts = dataclasses.replace(self.parts, cipher=TemplateCipher(
                [*_active(key_file)]))
        self._audit_event("rotate_template_key", subject_ids=[], detail=new_cipher.key_id)
        return count

    def reload_policy(self, path: Path | None = None) -> str:
        """Load the policy file again; on any error keep the last good policy and raise.

        Returns the new policy version. The caller (CLI, SIGHUP handler, admin route)
        reports the ``PolicyError``; decisions keep using the previous, valid policy.
        """
        from gate.policy.evaluate import RulePolicyEngine
        from gate.policy.load import load_policy

        source = path or self.settings.policy_file
        try:
            engine = RulePolicyEngine(load_policy(source))
        except GateError:
            log.error("policy reload failed; keeping the last good policy",
                      extra={"policy_version": self.parts.policy.version})
            raise
        with self._lock:
            self.parts = dataclasses.replace(self.parts, policy=engine)
        self._audit_event("policy_reload", subject_ids=[], detail=engine.version)
        return engine.version

    def verify_audit(self) -> AuditVerification:
        return self.parts.audit.verify()

    def audit_events(self, since_seq: int = 0, limit: int = 100) -> list[dict[str, Any]]:
        """Audit events after ``since_seq`` (no pixels, embeddings or names in them)."""
        return [{"seq": r.seq, "at": r.at, "hash": r.hash, "prev_hash": r.prev_hash,
                 "event": r.event} for r in self.parts.audit.query(since_seq, min(limit, 1000))]

    def readiness(self) -> dict[str, bool]:
        """What /readyz reports: models loaded, database reachable, policy valid."""
        checks = {"models": self.parts.detector is not None and self.parts.embedder is not None,
                  "policy": bool(self.parts.policy.version), "database": True,
                  "open": not self._closed, "model_pack": not self._foreign_packs}
        try:
            self.parts.store.ping()
        except GateError:
            checks["database"] = False
        return checks

    # -- the decision ---------------------------------------------------------------------
    def check(self, request: GateRequest) -> Decision:
        """Decide. Raises only for bad input (``InvalidImage``/``InvalidRequest``)."""
        return self._run(request, for_output=False)

    def _run(self, request: GateRequest, *, for_output: bool) -> Decision:
        self._check_open()
        request_id = request.request_id or f"req_{uuid.uuid4().hex[:20]}"
        timer = _Timer()
        started = time.perf_counter()
        try:
            future = self._workers.submit(self._decide, request, request_id, timer,
                                          for_output)
            try:
                decision = future.result(timeout=self.settings.check_timeout_s)
            except concurrent.futures.TimeoutError:
                future.cancel()
                decision = self._fault(request, request_id, "timeout", timer)
        except (InvalidImage, InvalidRequest):
            raise
        except GateError as exc:
            decision = self._fault(request, request_id, exc.code, timer)
        except Exception as exc:
            log.exception("unexpected error in check", extra={"request_id": request_id})
            decision = self._fault(request, request_id, type(exc).__name__, timer)
        total = (time.perf_counter() - started) * 1000
        return decision.model_copy(
            update={"latency_ms": {**decision.latency_ms, "total": round(total, 3)}})

    def check_output(self, image: bytes, *, request_id: str, requester: Requester,
                     operation: str = "txt2img", content: Sequence[str] = ("general",),
                     prompt: str = "") -> Decision:
        """Screen a generated image; the result can only tighten the input decision.

        The input check already counted the use of a limited grant: screening its output
        neither counts it again nor fails because that use was the last one.
        """
        request = GateRequest(operation=operation, images=[ImageInput(role="output", data=image)],
                              content=list(content), prompt=prompt, requester=requester,
                              request_id=request_id)
        return self._run(request, for_output=True)

    def _decide(self, request: GateRequest, request_id: str, timer: _Timer,
                for_output: bool = False) -> Decision:
        self.ensure_pack_matches()
        t = time.perf_counter()
        self.sync()
        timer.add("sync", t)
        t = time.perf_counter()
        content, text_rules = self._effective_content(request)
        if for_output and self.parts.nudity is not None and self._output_is_sexual(request):
            content = (content - {"general"}) | {"sexual"}
            text_rules = [*text_rules, "output.nudity"]
        t = timer.add("screen", t)
        faces = self._analyse(request, timer, need_age="sexual" in content)
        t = time.perf_counter()
        vectors = np.stack([f.vector for f in faces]) if faces else np.zeros((0, 1), np.float32)  # type: ignore[misc]
        hits = self.parts.index.search(vectors, k=3) if faces else []
        t = timer.add("search", t)
        name_hits = self._names_in_prompt(request)
        t = timer.add("names", t)
        results, needs, covering = self._classify(request, faces, hits, name_hits, content,
                                                  count_uses=not for_output)
        t = timer.add("identify", t)
        facts = RequestFacts(
            operation=request.operation, content=frozenset(content),
            app_id=request.requester.app_id, user_id=request.requester.user_id,
            faces=tuple(FaceFacts(face_ref=r.face_ref, identity=r.identity, role=r.role,
                                  source=r.source, subject_status=r.subject_status,
                                  age_band=_age_band(r),
                                  grant_purpose=covering[r.grant_id].purpose if r.grant_id
                                  else None)
                        for r in results),
        )
        evaluation = self.parts.policy.evaluate(facts)
        t = timer.add("policy", t)
        verdict, reasons = evaluation.verdict, list(evaluation.reasons)
        if verdict == "allow" and not for_output:
            verdict, reasons = self._consume_uses(results, covering, verdict, reasons)
        decision = Decision(
            verdict=verdict, request_id=request_id, policy_version=self.parts.policy.version,
            reasons=reasons, faces=results,
            obligations=list(evaluation.obligations) if verdict == "allow" else [],
            consent_needed=needs if verdict == "needs_consent" else [],
            content=sorted(content), latency_ms=dict(timer.stages),
        )
        self._audit_decision(request, decision, text_rules)
        timer.add("audit", t)
        return decision.model_copy(update={"latency_ms": dict(timer.stages)})

    # -- pipeline stages -----------------------------------------------------------------
    def _analyse(self, request: GateRequest, timer: _Timer, need_age: bool) -> list[_Face]:
        """Faces (box, quality, vector, and age when needed) of every input; byte-identical
        images are served from the analysis cache."""
        per_image: list[list[_Face]] = []
        fresh: list[tuple[int, str]] = []
        for i, img in enumerate(request.images):
            digest = img.sha256
            cached = self._analyses.get(digest)
            if cached is not None and need_age and any(f.age_band is None for f in cached):
                cached = None  # analysed before without age: run again with pixels
            if cached is None:
                t = time.perf_counter()
                decoded = self._decode(img.data)
                t = timer.add("decode", t)
                per_image.append(self._detect(decoded, i, img.role))
                timer.add("detect", t)
                fresh.append((i, digest))
            else:
                per_image.append([_Face(i, f.frame_index, img.role, f.det, f.scale, None,
                                        f.quality, None, f.vector, f.age_years, f.age_band)
                                  for f in cached])
        new_faces = [f for i, _ in fresh for f in per_image[i]]
        t = time.perf_counter()
        for face in new_faces:
            self._prepare(face)
        t = timer.add("align", t)
        if need_age:
            for face in new_faces:
                assert face.pixels is not None and face.crop is not None
                estimate = self.parts.age.estimate(face.pixels, face.det.bbox,
                                                   face.det.landmarks_array(), face.crop)
                face.age_years = None if estimate.years != estimate.years else estimate.years
                face.age_band = estimate.band
            t = timer.add("age", t)
        if new_faces:
            vectors = self.parts.embedder.embed([f.crop for f in new_faces])  # type: ignore[misc]
            for face, vec in zip(new_faces, vectors, strict=True):
                face.vector, face.crop, face.pixels = vec, None, None
        timer.add("embed", t)
        for i, digest in fresh:
            self._analyses.put(digest, tuple(per_image[i]))
        return [f for faces in per_image for f in faces]

    def _decode(self, data: bytes) -> DecodedImage:
        """Images (every frame of an animation) or videos (sampled frames)."""
        if is_video(data):
            return decode_video(data, self._video_limits)
        return decode_image(data, self._limits)

    def _detect(self, decoded: DecodedImage, image_index: int, role: str) -> list[_Face]:
        out: list[_Face] = []
        for frame in decoded.frames:
            for det in self.parts.detector.detect(frame.pixels):
                out.append(_Face(image_index, frame.index, role, det, frame.scale, frame.pixels))
        return _dedupe_frames(out)

    def _prepare(self, face: _Face) -> None:
        assert face.pixels is not None
        face.crop, aligned_points = align_face(face.pixels, face.det.landmarks_array())
        face.quality = face_quality(face.det, face.crop, aligned_points).score

    def _effective_content(self, request: GateRequest) -> tuple[set[str], list[str]]:
        from gate.text import screen_prompt

        content: set[str] = set(request.content)
        screen = screen_prompt(request.prompt, request.negative_prompt)
        content |= set(screen.categories)
        if request.operation == "nudify":
            content.add("sexual")
        if len(content) > 1:
            content.discard("general")
        return content, list(screen.rule_hits)

    def _output_is_sexual(self, request: GateRequest) -> bool:
        """Does any frame of a generated image look sexual to the nudity classifier?"""
        assert self.parts.nudity is not None
        for img in request.images:
            for frame in self._decode(img.data).frames:
                if self.parts.nudity.score(frame.pixels).is_sexual:
                    return True
        return False

    def _names_in_prompt(self, request: GateRequest) -> list[str]:
        text = f"{request.prompt}\n{request.negative_prompt}".strip()
        if not text:
            return []
        matcher = self._name_matcher()
        return list(dict.fromkeys(hit.subject_id for hit in matcher.find(text)))

    def _name_matcher(self) -> Any:
        from gate.text import NameMatcher

        epoch = self._feed_seq
        cached = self._names_cache
        if cached is None or cached[0] != epoch:
            names = {s.subject_id: [s.display_name, *s.aliases]
                     for s in self.parts.store.list_subjects()}
            cached = (epoch, NameMatcher(names))
            self._names_cache = cached
        return cached[1]

    def _classify(self, request: GateRequest, faces: list[_Face], hits: list[Any],
                  name_hits: list[str], content: set[str], *, count_uses: bool = True
                  ) -> tuple[list[FaceResult], list[ConsentNeed], dict[str, Grant]]:
        """Identity of every face and named person; also the grants that cover them."""
        threshold = self.settings.match_threshold
        matched_ids = [h.subject_id for row in hits for h in row if h.similarity >= threshold]
        subject_ids = set(matched_ids) | set(name_hits)
        subjects = {s: self.parts.store.get_subject(s) for s in subject_ids}
        grants = self.parts.store.grants_for(subject_ids)
        now = datetime.now(UTC)
        results: list[FaceResult] = []
        needs: list[ConsentNeed] = []
        covering: dict[str, Grant] = {}
        req = request.requester

        allow_threshold = self.settings.permissive_threshold

        def identify(subject_id: str, similarity: float = 1.0
                     ) -> tuple[str, str | None, str | None]:
            subject = subjects.get(subject_id)
            if subject is None:  # erased between search and lookup: treat as unknown
                return "unknown", None, None
            if subject.status == "protected":
                return "protected", "protected", None
            # Below the allow threshold a match is close enough to protect this person,
            # not close enough to hand a stranger their self-use or consent: a reading
            # that would permit becomes "unknown" (and counts no grant use).
            confident = similarity >= allow_threshold
            if subject.owner is not None and subject.owner.app_id == req.app_id and \
                    subject.owner.user_id == req.user_id and req.user_id is not None:
                return ("self", subject.status, None) if confident else ("unknown", None, None)
            for g in grants.get(subject_id, []):
                if g.covers(app_id=req.app_id, user_id=req.user_id,
                            operation=request.operation, content=sorted(content),
                            purpose=request.purpose, now=now, count_uses=count_uses):
                    if not confident:
                        return "unknown", None, None
                    covering[g.grant_id] = g
                    return "consented", subject.status, g.grant_id
            return "protected", subject.status, None

        for n, face in enumerate(faces):
            ref = f"i{face.image_index}f{n}" if face.frame_index == 0 else \
                f"i{face.image_index}t{face.frame_index}f{n}"
            size_px = round(face.det.size_px / face.scale)
            poor = size_px < self.settings.min_face_px or face.quality < self.settings.min_quality
            identity, status, grant_id, subject_id, similarity = "unknown", None, None, None, None
            candidates = [h for h in hits[n] if h.similarity >= threshold and h.subject_id in
                          subjects]
            if hits[n]:
                similarity = round(hits[n][0].similarity, 4)
            if candidates:
                # When several enrolled people match, the most restrictive reading wins: a
                # protected person anywhere above the threshold, or an ambiguous tie between
                # two subjects, can never turn into "consented".
                top = candidates[0].similarity
                close = [h for h in candidates
                         if h is candidates[0] or h.similarity >= top - AMBIGUITY_MARGIN
                         or (subjects[h.subject_id].status == "protected"  # type: ignore[union-attr]
                             and h.similarity >= top - self.settings.protected_margin)]
                readings = [(h, *identify(h.subject_id, h.similarity)) for h in close]
                hit, identity, status, grant_id = max(
                    readings, key=lambda r: RESTRICTIVENESS.get((r[1], r[2]), 99))
                subject_id, similarity = hit.subject_id, round(hit.similarity, 4)
                if identity == "unknown":
                    subject_id = None
            if poor and identity in ("unknown", "consented", "self"):
                identity, grant_id = "unidentifiable", None
            bbox = tuple(round(v / face.scale) for v in face.det.bbox)
            results.append(FaceResult(
                face_ref=ref, image_index=face.image_index, frame_index=face.frame_index,
                role=face.role, bbox=bbox, det_score=round(face.det.score, 4),
                quality=round(face.quality, 4), size_px=size_px, identity=identity,
                subject_id=subject_id, subject_status=status, similarity=similarity,
                grant_id=grant_id, age_band=face.age_band,
                apparent_age=None if face.age_years is None else round(face.age_years, 1),
            ))
        for n, subject_id in enumerate(name_hits):
            identity, status, grant_id = identify(subject_id)
            if identity == "unknown":
                continue
            results.append(FaceResult(
                face_ref=f"p{n}", image_index=-1, role="reference", bbox=(0, 0, 0, 0),
                det_score=0.0, quality=0.0, size_px=0, identity=identity,
                subject_id=subject_id, subject_status=status, grant_id=grant_id,
                source="prompt",
            ))
        for r in results:
            if r.identity in ("unknown", "unidentifiable") or (
                    r.identity == "protected" and r.subject_status == "consenting"):
                needs.append(ConsentNeed(
                    face_ref=r.face_ref, subject_id=r.subject_id, operation=request.operation,
                    content=sorted(content), app_id=req.app_id, user_id=req.user_id,
                ))
        return results, needs, covering

    def _consume_uses(self, results: list[FaceResult], covering: dict[str, Grant],
                      verdict: str, reasons: list[Reason]) -> tuple[str, list[Reason]]:
        """Count one use of each limited grant; a grant used up in a race turns into deny."""
        for grant_id in dict.fromkeys(r.grant_id for r in results if r.grant_id):
            if covering[grant_id].max_uses is None:
                continue
            if not self.parts.store.consume_use(grant_id):
                return "deny", [Reason(rule_id="core.grant_exhausted", effect="deny",
                                       message="the consent grant has no uses left")]
        return verdict, reasons

    # -- failure and audit ---------------------------------------------------------------
    def _fault(self, request: GateRequest, request_id: str, fault: str,
               timer: _Timer) -> Decision:
        log.error("check failed closed", extra={"request_id": request_id, "fault": fault})
        decision = Decision(
            verdict="deny", request_id=request_id, policy_version=self.parts.policy.version,
            reasons=[Reason(rule_id="core.fail_closed", effect="deny",
                            message=f"the gate could not decide safely ({fault}); denied")],
            faces=[], latency_ms=dict(timer.stages),
        )
        try:
            self._audit_decision(request, decision, [])
        except Exception:  # noqa: BLE001 -- the deny stands even if it cannot be audited
            log.error("audit append failed", extra={"request_id": request_id})
        return decision

    def _audit_decision(self, request: GateRequest, decision: Decision,
                        text_rules: list[str]) -> None:
        self.parts.audit.append({
            "kind": "check",
            "request_id": decision.request_id,
            "app_id": request.requester.app_id,
            "operation": request.operation,
            "verdict": decision.verdict,
            "rule_ids": sorted({r.rule_id for r in decision.reasons}),
            "subject_refs": sorted({subject_ref(self.parts.audit_key, f.subject_id)
                                    for f in decision.faces if f.subject_id}),
            "grant_ids": sorted({f.grant_id for f in decision.faces if f.grant_id}),
            "image_sha256s": [img.sha256 for img in request.images],
            "text_rules": text_rules,
            "policy_version": decision.policy_version,
        })

    def _audit_event(self, kind: str, *, subject_ids: Sequence[str],
                     detail: str | None = None) -> None:
        event: dict[str, Any] = {
            "kind": kind,
            "subject_refs": [subject_ref(self.parts.audit_key, s) for s in subject_ids],
        }
        if detail is not None:
            event["detail"] = detail
        self.parts.audit.append(event)

    def ensure_pack_matches(self) -> None:
        """Raise when stored templates belong to another model pack (re-enrol needed)."""
        if self._foreign_packs:
            raise ModelMismatch(
                f"stored templates were made with {sorted(self._foreign_packs)}, but the gate "
                f"runs {self.parts.embedder.pack_id}; re-enrol those subjects")


#: Two subjects whose similarities are this close are an ambiguous match.
AMBIGUITY_MARGIN = 0.05
#: Identity readings from most permissive to most restrictive.
RESTRICTIVENESS = {
    ("self", "consenting"): 0, ("consented", "consenting"): 1, ("unknown", None): 2,
    ("protected", "consenting"): 3, ("protected", "protected"): 4,
}


def _age_band(face: FaceResult) -> str:
    """Policy age band of a face; ``unknown`` when no estimate was made."""
    return face.age_band or "unknown"


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _dedupe_frames(faces: list[_Face]) -> list[_Face]:
    """Alpha-composited duplicates of a frame share an index; keep each box once."""
    kept: list[_Face] = []
    for face in faces:
        if any(k.image_index == face.image_index and k.frame_index == face.frame_index
               and box_iou(k.det.bbox, face.det.bbox) > 0.8 for k in kept):
            continue
        kept.append(face)
    return kept



def _active(key_file: Path) -> list[bytes]:
    from gate.identity.templates import load_keyring

    return load_keyring(key_file)
