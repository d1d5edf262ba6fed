"""FaceGate: the one engine. SDK, CLI, HTTP and proxy all call ``FaceGate.check``.

screen text -> analyse faces (``gate.pipeline``: decode -> detect -> align -> quality ->
age -> embed) -> 1:N search -> identity readings (``gate.identity.classify``, a pure
function) -> policy -> one outcome per request id -> grant use counting -> audit. Any
failure inside the decision path ends in a ``deny`` naming the fault class, or in a raised
``GateError`` for input the caller must fix (bad image, bad request). No code path turns
an exception into ``allow``. The engine owns the deadline (``check_timeout_s``) and the
bounded workers (``gate.work.WorkPool``) that every image-decoding call runs on.

Everything about a person's life (enrol, status, grants, erasure, export) is
``FaceGate.lifecycle`` (``gate.consent.lifecycle``); the methods below with those names
are the SDK's doors to it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import hashlib
import hmac
import logging
import threading
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy.engine import Engine

from gate.audit.chain import AuditSink, subject_ref
from gate.clock import utcnow
from gate.consent.lifecycle import SubjectLifecycle
from gate.consent.store import ConsentStore
from gate.consent.tokens import GrantTokens
from gate.errors import (
    GateClosed,
    GateError,
    InvalidImage,
    InvalidRequest,
    ModelMismatch,
    NotFound,
    StorageError,
    TemplateKeyMismatch,
)
from gate.identity.classify import (
    MIRROR_ALWAYS,
    Asked,
    Observation,
    Thresholds,
    classify,
    mirror_can_matter,
)
from gate.identity.follower import IndexFollower
from gate.identity.index import IdentityIndex, IndexHit
from gate.identity.protection import TemplateProtector
from gate.identity.templates import TemplateCipher
from gate.incident.desk import IncidentDesk
from gate.incident.reports import Report
from gate.incident.trace import Trace
from gate.marking.output import Labelled
from gate.marking.provenance import ManifestSigner
from gate.pipeline import FaceAnalyzer, ImageAnalysis, StageTimer, limits_from_settings
from gate.policy.evaluate import FaceFacts, PolicyEngine, RequestFacts
from gate.policy.jurisdictions import PolicyLibrary, PolicySet
from gate.settings import Settings
from gate.types import (
    AuditVerification,
    ConsentRecord,
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
from gate.vision.detect import FaceDetector
from gate.vision.embed import FaceEmbedder
from gate.vision.nudity import NudityClassifier
from gate.work import WorkPool

log = logging.getLogger("gate")

#: How often readiness re-runs the database integrity probe, seconds.
INTEGRITY_PROBE_EVERY_S = 30.0


@dataclasses.dataclass(frozen=True, slots=True)
class Parts:
    """The swappable parts a FaceGate is built from (see ``gate.factory``)."""

    detector: FaceDetector
    embedder: FaceEmbedder
    age: AgeEstimator
    index: IdentityIndex
    store: ConsentStore
    #: The base policy and the jurisdiction packs (``PolicyLibrary``: one ``PolicySet``
    #: per selection of packs), or one plain ``PolicyEngine`` (no packs).
    policy: PolicyLibrary | PolicyEngine
    audit: AuditSink
    cipher: TemplateCipher
    audit_key: bytes
    #: Optional output nudity classifier (``check_output`` only); None: not configured.
    nudity: NudityClassifier | None = None
    #: Grant tokens and the revocation feed; None: grants carry no token.
    tokens: GrantTokens | None = None
    #: Keys of the invisible output mark, active first (``mark.key``); empty: derived
    #: from ``audit_key``.
    mark_keys: tuple[bytes, ...] = ()


class _Superseded(Exception):
    """The request's outcome was already given (by its timeout)."""


class _Outcome:
    """One outcome per request id: the decision or its timeout, whichever claims first."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._owner: str | None = None

    def claim(self, who: str) -> bool:
        with self._lock:
            if self._owner is None:
                self._owner = who
            return self._owner == who


class FaceGate:
    """Decides whether a generation request may use the faces in it."""

    def __init__(self, parts: Parts, settings: Settings) -> None:
        self.settings = settings
        self._closed = False
        self._lock = threading.RLock()
        self._names_cache: tuple[int, Any] | None = None
        self._problem: str | None = None  # why the gate cannot decide (not ready)
        self._integrity: tuple[float, str | None] = (-1e9, None)
        self.pool = WorkPool(settings.check_workers, settings.check_timeout_s,
                             name="gate-check")
        self._wire(parts)
        self._integrity_problem(force=True)
        try:
            self.follower.load()
        except TemplateKeyMismatch as exc:
            self._problem = "template_key"
            log.error("stored face templates were sealed with a template key this gate does "
                      "not hold (another data dir's key?): not ready, every check is denied",
                      extra={"fault": exc.code})

    def _wire(self, parts: Parts, previous: IndexFollower | None = None) -> None:
        """Build the pipeline, the index follower and the lifecycle from ``parts``."""
        from gate.consent.hooks import ERASURE_HOOKS, EXPORT_HOOKS

        old = getattr(self, "faces", None)
        self._parts = parts
        if old is None or (old.detector, old.embedder, old.age, old.nudity) != (
                parts.detector, parts.embedder, parts.age, parts.nudity):
            limits, video_limits = limits_from_settings(self.settings)
            self.faces = FaceAnalyzer(
                parts.detector, parts.embedder, parts.age, limits=limits,
                video_limits=video_limits, nudity=parts.nudity,
                cache_items=self.settings.analysis_cache_items,
                cache_ttl_s=self.settings.analysis_cache_ttl_s,
                defer_mirror=self.settings.flip_margin < MIRROR_ALWAYS,
                zooms=self.settings.zoom_views)
        self.follower = IndexFollower(parts.store, parts.index, parts.cipher,
                                      pack_id=parts.embedder.pack_id,
                                      index_file=self.settings.index_file,
                                      previous=previous)
        self.follower.on_forget(self.faces.clear_cache)
        self.lifecycle = SubjectLifecycle(
            parts.store, self.follower, self.faces, parts.audit, parts.audit_key, parts.tokens,
            min_face_px=self.settings.min_face_px, erasure_hooks=ERASURE_HOOKS,
            export_hooks=EXPORT_HOOKS)
        self.incident = self._incident_desk(parts)
        if self.incident is not None:
            self.follower.on_change("blocklist", self.incident.blocklist.reload)

    def _incident_desk(self, parts: Parts) -> IncidentDesk | None:
        """Incident response needs an SQL store (the SQLite default or PostgreSQL)."""
        engine = getattr(parts.store, "engine", None)
        if not isinstance(engine, Engine):
            return None
        keys = parts.mark_keys or (hmac.new(parts.audit_key, b"consent-gate mark key",
                                            hashlib.sha256).digest(),)
        limits, _ = limits_from_settings(self.settings)
        return IncidentDesk(
            engine, parts.audit, mark_keys=keys,
            limits=dataclasses.replace(limits, target_side_px=None),
            resolve_refs=self._subjects_of_refs, signer=self._signer(),
            content_producer=self.settings.content_producer,
            takedown_hours=self.settings.takedown_hours)

    def _signer(self) -> ManifestSigner | None:
        s = self.settings
        if s.c2pa_cert_file is None or s.c2pa_key_file is None:
            return None
        from gate.marking.provenance import C2paSigner

        return C2paSigner.from_files(s.c2pa_cert_file, s.c2pa_key_file, s.c2pa_alg)

    def _subjects_of_refs(self, refs: Sequence[str]) -> list[str]:
        """The enrolled subjects whose audit references are ``refs`` (erased: none)."""
        wanted = set(refs)
        if not wanted:
            return []
        key = self._parts.audit_key
        return sorted(s.subject_id for s in self._parts.store.list_subjects()
                      if subject_ref(key, s.subject_id) in wanted)

    @property
    def parts(self) -> Parts:
        """The parts in use now (the index may have been reopened from disk)."""
        return dataclasses.replace(self._parts, index=self.follower.index,
                                   cipher=self.follower.cipher)

    @parts.setter
    def parts(self, parts: Parts) -> None:
        """Swap parts (tests, policy reload): everything built from them is rebuilt."""
        with self._lock:
            self._wire(parts, previous=self.follower)

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
                self.pool.close()
                self.faces.clear_cache()
                for step in (self.follower.close, self._parts.store.close):
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

    def sync(self) -> int:
        """Apply consent changes made elsewhere (other replicas or processes)."""
        return self.follower.sync()

    # -- the lifecycle (SDK doors; every other door calls ``lifecycle`` too) ---------------
    def enroll(self, images: Sequence[bytes], display_name: str,
               status: SubjectStatus = "protected", owner: Requester | None = None,
               aliases: Sequence[str] = (), guardian: bool = False) -> Subject:
        """Enrol one person from photos that each show exactly one face.

        Several photos (3 or more, different days, light and angles) are recognised far
        better than one: see docs/accuracy.md."""
        self._check_open()
        return self.pool.run(self.lifecycle.enroll, images, display_name, status=status,
                             owner=owner, aliases=aliases, guardian=guardian)

    def get_subject(self, subject_id: str) -> Subject:
        return self.lifecycle.get_subject(subject_id)

    def list_subjects(self) -> list[Subject]:
        return self.lifecycle.list_subjects()

    def set_status(self, subject_id: str, status: SubjectStatus) -> Subject:
        self._check_open()
        return self.lifecycle.set_status(subject_id, status)

    def grant(self, subject_id: str, *, app_id: str, operations: Iterable[str],
              content: Iterable[str] = ("general",), user_id: str | None = None,
              purpose: str | None = None, expires_at: datetime | None = None,
              not_before: datetime | None = None, max_uses: int | None = None,
              consent: ConsentRecord | Mapping[str, Any] | None = None) -> Grant:
        """Record a consent grant for ``subject_id`` (durable before it returns)."""
        self._check_open()
        return self.lifecycle.grant(subject_id, app_id=app_id, operations=operations,
                                    content=content, user_id=user_id, purpose=purpose,
                                    expires_at=expires_at, not_before=not_before,
                                    max_uses=max_uses, consent=consent)

    def revoke(self, grant_id: str) -> Grant:
        """Revoke at once; the grant never allows again."""
        self._check_open()
        return self.lifecycle.revoke(grant_id)

    def list_grants(self, subject_id: str | None = None) -> list[Grant]:
        return self.lifecycle.list_grants(subject_id)

    def erase(self, subject_id: str) -> bool:
        """Erase a subject everywhere: every row about them, index entries, the persisted
        index, caches; their grant tokens are listed as revoked. Audit keeps hashes."""
        self._check_open()
        self.lifecycle.erase(subject_id)
        return True

    def largest_face_vector(self, data: bytes) -> tuple[np.ndarray, float] | None:
        """Template and quality of a photo's largest face (evaluation tooling only: the
        template never leaves the process)."""
        self._check_open()
        face = self.pool.run(self.faces.largest_face, data)
        return None if face is None else (face.vector, face.quality)

    def export(self, subject_id: str) -> dict[str, Any]:
        """Everything kept about the subject (never templates), as JSON-ready data."""
        return self.lifecycle.export(subject_id)

    def rotate_template_key(self) -> int:
        """Re-encrypt every template under a new key; returns the number re-encrypted.

        Crash-safe order: the new key is added to the keyring file first (old keys kept),
        then all rows are re-encrypted in one transaction, then old keys are dropped.
        """
        from gate.identity.templates import (
            add_active_key,
            drop_inactive_keys,
            load_keyring,
        )

        key_file = self.settings.resolved_key_file()
        with self._lock:
            new_cipher = TemplateCipher(add_active_key(key_file))
            old_cipher = self.follower.cipher

            def reseal(subject_id: str, pack: str, blob: bytes) -> bytes | None:
                if not new_cipher.needs_rotation(blob):
                    return None
                vec = old_cipher.decrypt(blob, subject_id=subject_id, pack_id=pack)
                return new_cipher.encrypt(vec, subject_id=subject_id, pack_id=pack)

            count = self._parts.store.rewrite_templates(reseal)
            index = self.follower.shared
            if index is not None:
                # Milvus: re-project the protected templates under the new key's rotation
                # (a crash before this leaves a new, empty collection: rebuilt at start)
                index.rotate_key(TemplateProtector.from_keyring(load_keyring(key_file),
                                                                index.dim))
            drop_inactive_keys(key_file)
            cipher = TemplateCipher(load_keyring(key_file))
            self._parts = dataclasses.replace(self._parts, cipher=cipher)
            self.follower.set_cipher(cipher)
        self.lifecycle._audit("rotate_template_key", [], new_cipher.key_id)
        return count

    def reload_policy(self, path: Path | None = None) -> str:
        """Load the policy file again; on any error keep the last good policy and raise.

        Returns the new policy version. Decisions keep using the previous, valid policy.
        """
        source = path or self.settings.policy_file
        try:
            library = PolicyLibrary(source)
        except GateError:
            log.error("policy reload failed; keeping the last good policy",
                      extra={"policy_version": self.policy_for(self._parts).version})
            raise
        with self._lock:
            self._parts = dataclasses.replace(self._parts, policy=library)
        version = self.policy_for(self._parts).version
        self.lifecycle._audit("policy_reload", [], version)
        return version

    def formalities_for(self, operation: str, content: Sequence[str],
                        jurisdictions: Sequence[str] = ()) -> frozenset[str]:
        """How consent to ``operation`` on ``content`` must be given under the deployment's
        jurisdictions and ``jurisdictions`` (e.g. ``{"written_release"}`` for us-il)."""
        policy = self.policy_for(self._parts, jurisdictions)
        if not isinstance(policy, PolicySet):
            return frozenset()
        return policy.required_formalities(operation, content)

    def retention_days(self) -> int | None:
        """Days after a subject's last interaction by which the packs in force require
        their templates destroyed (None: no pack sets it)."""
        policy = self.policy_for(self._parts)
        return policy.retention_days if isinstance(policy, PolicySet) else None

    def policy_for(self, parts: Parts, extra: Sequence[str] = ()) -> PolicyEngine:
        """The policy of a decision: the base composed with the deployment's
        jurisdiction packs and any ``extra`` codes (an app's); a plain engine as is."""
        policy = parts.policy
        if isinstance(policy, PolicyLibrary):
            return policy.policy_set([*self.settings.jurisdiction_codes, *extra])
        return policy

    # -- audit and health ---------------------------------------------------------------
    def verify_audit(self) -> AuditVerification:
        return self._parts.audit.verify()

    def audit_events(self, since_seq: int = 0, limit: int = 100) -> list[dict[str, Any]]:
        """Audit events after ``since_seq`` (no pixels, embeddings or names in them)."""
        return [{"seq": r.seq, "at": r.at, "hash": r.hash, "prev_hash": r.prev_hash,
                 "event": r.event} for r in self._parts.audit.query(since_seq, min(limit, 1000))]

    def audit_events_of(self, request_id: str) -> list[dict[str, Any]]:
        """The audit events about one request id (decision, output screenings)."""
        return [{"seq": r.seq, "at": r.at, "hash": r.hash, "prev_hash": r.prev_hash,
                 "event": r.event} for r in self._parts.audit.for_request(request_id)]

    def readiness(self) -> dict[str, bool]:
        """What /readyz reports: models loaded, database reachable and sound, policy valid,
        stored templates readable. Any false check means checks are denied."""
        parts = self._parts
        checks = {"models": parts.detector is not None and parts.embedder is not None,
                  "policy": bool(self.policy_for(parts).version), "database": True,
                  "open": not self._closed, "model_pack": not self.follower.foreign_packs,
                  "template_key": self._problem != "template_key", "integrity": True}
        try:
            parts.store.ping()
        except GateError:
            checks["database"] = False
        index = self.follower.shared
        if index is not None:
            checks["index"] = True
            try:
                index.ping()
            except GateError:
                checks["index"] = False
        problem = self._integrity_problem(force=True)
        if problem is not None:
            checks["integrity"] = False
        return checks

    def _integrity_problem(self, *, force: bool = False) -> str | None:
        """The store's integrity probe, re-run at most every ``INTEGRITY_PROBE_EVERY_S``."""
        checked_at, problem = self._integrity
        now = time.monotonic()
        if force and now - checked_at >= INTEGRITY_PROBE_EVERY_S:
            problem = self._parts.store.integrity_problem()
            if problem is not None and problem != self._integrity[1]:
                log.error("the consent database failed its integrity probe; every check is "
                          "denied until it is repaired", extra={"fault": "integrity"})
            self._integrity = (now, problem)
        return problem

    def ensure_pack_matches(self) -> None:
        """Raise when stored templates belong to another model pack (re-enrol needed)."""
        foreign = self.follower.foreign_packs
        if foreign:
            raise ModelMismatch(
                f"stored templates were made with {sorted(foreign)}, but the gate "
                f"runs {self._parts.embedder.pack_id}; re-enrol those subjects")

    def _ensure_ready(self) -> None:
        if self._problem == "template_key":
            raise TemplateKeyMismatch("stored templates were sealed with a template key "
                                      "this gate does not hold")
        problem = self._integrity_problem()
        if problem is not None:
            raise StorageError(problem)
        self.ensure_pack_matches()

    # -- the decision ---------------------------------------------------------------------
    def check(self, request: GateRequest) -> Decision:
        """Decide. Raises only for bad input (``InvalidImage``/``InvalidRequest``)."""
        return self._run(request, for_output=False)

    async def check_async(self, request: GateRequest) -> Decision:
        """``check`` for an event loop: one hop to a worker, the engine's deadline."""
        return await self._run_async(request, for_output=False)

    def check_output(self, image: bytes, *, request_id: str, requester: Requester,
                     operation: str = "txt2img", content: Sequence[str] = ("general",),
                     prompt: str = "", jurisdictions: Sequence[str] = ()) -> Decision:
        """Screen a generated image; the result can only tighten the input decision.

        The input check already counted the use of a limited grant: screening its output
        neither counts it again nor fails because that use was the last one.
        """
        return self._run(_output_request(image, request_id, requester, operation, content,
                                         prompt, jurisdictions), for_output=True)

    async def check_output_async(self, image: bytes, *, request_id: str, requester: Requester,
                                 operation: str = "txt2img",
                                 content: Sequence[str] = ("general",),
                                 prompt: str = "", jurisdictions: Sequence[str] = ()
                                 ) -> Decision:
        return await self._run_async(_output_request(
            image, request_id, requester, operation, content, prompt, jurisdictions),
            for_output=True)

    # -- incident response -------------------------------------------------------------
    def incident_desk(self) -> IncidentDesk:
        """The incident desk (raises ``StorageError`` without an SQL store)."""
        self._check_open()
        if self.incident is None:
            raise StorageError("incident response needs an SQL consent store")
        return self.incident

    def label_output(self, image: bytes, *, request_id: str) -> bytes:
        """The generated image of ``request_id``, marked and labelled (see ``label``)."""
        return self.label(image, request_id=request_id).data

    def label(self, image: bytes, *, request_id: str, decision: Decision | None = None,
              locale: str | None = None, signer: ManifestSigner | None = None,
              app_id: str | None = None) -> Labelled:
        """Mark and label the output of an allowed request (``gate.marking.output``):
        an invisible mark naming the request (what ``trace`` reads), the implicit AI
        labels, and what the decision's obligations ask (a visible label, a C2PA
        manifest). Without ``decision`` the gate's audit record of ``request_id`` gives
        them; a request this gate did not allow (for ``app_id``, when given) is refused
        (``InvalidRequest``)."""
        desk = self.incident_desk()
        obligations: Sequence[str]
        jurisdictions: Sequence[str]
        if decision is None:
            obligations, jurisdictions, grants, version = self._allowed_record(request_id,
                                                                               app_id)
        else:
            if not decision.allowed or decision.request_id != request_id:
                raise InvalidRequest("only the output of an allowed request is labelled")
            obligations, jurisdictions = decision.obligations, decision.jurisdictions
            grants = [f.grant_id for f in decision.faces if f.grant_id]
            version = decision.policy_version
        policy = self.policy_for(self._parts, jurisdictions)
        plan = policy.labels() if isinstance(policy, PolicySet) else None
        return desk.label(image, request_id=request_id, obligations=obligations, plan=plan,
                          locale=locale or self.settings.label_locale, grant_ids=grants,
                          policy_version=version, signer=signer)

    def _allowed_record(self, request_id: str, app_id: str | None = None
                        ) -> tuple[Sequence[str], Sequence[str], Sequence[str], str]:
        """Obligations, jurisdictions, grants and policy version of an allowed request,
        from its audit events (the input decision and any output screening)."""
        events = [e.event for e in self._parts.audit.for_request(request_id)
                  if e.event.get("kind") == "check"]
        if not events or any(e.get("verdict") != "allow" or
                             (app_id is not None and e.get("app_id") != app_id)
                             for e in events):
            raise InvalidRequest("only the output of a request this gate allowed is labelled",
                                 field="request_id")
        obligations = list(dict.fromkeys(o for e in events for o in e.get("obligations", [])))
        jurisdictions = list(dict.fromkeys(j for e in events
                                           for j in e.get("jurisdictions", [])))
        grants = list(dict.fromkeys(g for e in events for g in e.get("grant_ids", [])))
        return obligations, jurisdictions, grants, str(events[0].get("policy_version", ""))

    def trace(self, image: bytes) -> Trace:
        """Where did this image come from? Its request and audit record, or
        ``found: false`` (never somebody else's record)."""
        return self.incident_desk().trace(image)

    def report(self, image: bytes | None = None, pdq: str | Sequence[str] | None = None,
               reason: str = "ncii", subject_id: str | None = None,
               contact: str | None = None) -> Report:
        """A takedown report: the image's hashes are blocked at once (provisionally),
        a trace runs and is attached, and the report's deadline is set (the shortest
        takedown window of the jurisdiction packs in force, else ``takedown_hours``)."""
        desk = self.incident_desk()
        if subject_id is not None and self._parts.store.get_subject(subject_id) is None:
            raise NotFound("no such subject")
        policy = self.policy_for(self._parts)
        hours = policy.takedown_hours if isinstance(policy, PolicySet) else None
        return desk.report(image=image, pdq=pdq, reason=reason, subject_id=subject_id,
                           contact=contact,
                           takedown_hours=min(hours or self.settings.takedown_hours,
                                              self.settings.takedown_hours))

    def _start(self, request: GateRequest, for_output: bool
               ) -> tuple[str, StageTimer, _Outcome, concurrent.futures.Future[Decision]]:
        self._check_open()
        request_id = request.request_id or f"req_{uuid.uuid4().hex[:20]}"
        timer, outcome = StageTimer(), _Outcome()
        future = self.pool.submit(self._decide_safely, request, request_id, timer, outcome,
                                  for_output)
        return request_id, timer, outcome, future

    def _run(self, request: GateRequest, *, for_output: bool) -> Decision:
        started = time.perf_counter()
        if self.pool.on_pool:  # already on a worker (nested call): decide inline
            self._check_open()
            request_id = request.request_id or f"req_{uuid.uuid4().hex[:20]}"
            decision = self._decide_safely(request, request_id, StageTimer(), _Outcome(),
                                           for_output)
            return _with_total(decision, started)
        request_id, timer, outcome, future = self._start(request, for_output)
        try:
            decision = future.result(timeout=self.settings.check_timeout_s)
        except concurrent.futures.TimeoutError:
            future.cancel()
            decision = self._timed_out(request, request_id, timer, outcome, future)
        return _with_total(decision, started)

    async def _run_async(self, request: GateRequest, *, for_output: bool) -> Decision:
        started = time.perf_counter()
        request_id, timer, outcome, future = self._start(request, for_output)
        try:
            decision = await asyncio.wait_for(asyncio.wrap_future(future),
                                              self.settings.check_timeout_s)
        except TimeoutError:
            decision = await asyncio.to_thread(self._timed_out, request, request_id, timer,
                                               outcome, future)
        return _with_total(decision, started)

    def _timed_out(self, request: GateRequest, request_id: str, timer: StageTimer,
                   outcome: _Outcome, future: concurrent.futures.Future[Decision]) -> Decision:
        """The deadline passed. If the decision has not claimed the outcome, the timeout
        does (a deny, audited once); if it has, its own outcome stands: wait for it."""
        if outcome.claim("timeout"):
            return self._fault(request, request_id, "timeout", timer)
        try:
            return future.result(timeout=max(5.0, self.settings.check_timeout_s))
        except (concurrent.futures.TimeoutError, GateError, _Superseded):
            log.error("a decision claimed its outcome but did not finish; denied",
                      extra={"request_id": request_id})
            return _denied(request_id, self.policy_for(self._parts).version, "timeout", timer)

    def _decide_safely(self, request: GateRequest, request_id: str, timer: StageTimer,
                       outcome: _Outcome, for_output: bool) -> Decision:
        try:
            return self._decide(request, request_id, timer, outcome, for_output)
        except (InvalidImage, InvalidRequest, _Superseded):
            raise
        except GateError as exc:
            fault = exc.code
        except Exception as exc:
            log.exception("unexpected error in check", extra={"request_id": request_id})
            fault = type(exc).__name__
        if not outcome.claim("worker"):
            raise _Superseded()
        return self._fault(request, request_id, fault, timer)

    def _decide(self, request: GateRequest, request_id: str, timer: StageTimer,
                outcome: _Outcome, for_output: bool) -> Decision:
        parts = self._parts  # one snapshot per decision: policy, store, audit...
        policy = self.policy_for(parts, request.jurisdictions)
        self._ensure_ready()
        with timer.stage("sync"):
            self.follower.sync()
        with timer.stage("screen"):
            content, text_rules, minor_in_prompt = _effective_content(request)
        screen_nudity = for_output and parts.nudity is not None
        desk = self.incident
        need_pdq = desk is not None and len(desk.blocklist) > 0
        analyses = self.faces.analyse(
            [img.data for img in request.images],
            need_age="sexual" in content or screen_nudity, need_nudity=screen_nudity,
            need_pdq=need_pdq, timer=timer)
        known = _known_images(desk, analyses) if need_pdq else []
        if screen_nudity and any(a.sexual for a in analyses):
            content = (content - {"general"}) | {"sexual"}
            text_rules = [*text_rules, "output.nudity"]
        observations, vectors = _observations(request, analyses)
        with timer.stage("search"):
            hits, sims = self._search(vectors) if observations else ([], None)
        if observations and self.faces.defers_mirror:
            hits, sims = self._mirror_where_it_matters(analyses, hits, sims, timer)
        with timer.stage("names"):
            named = self._names_in_prompt(request)
        with timer.stage("identify"):
            matched = {h.subject_id for row in hits for h in row
                       if h.similarity >= self.settings.match_threshold} | set(named)
            subjects = {s: found for s in matched
                        if (found := parts.store.get_subject(s)) is not None}
            grants = parts.store.grants_for(subjects)
            required = policy.required_formalities(request.operation, content) \
                if isinstance(policy, PolicySet) else frozenset()
            asked = Asked(operation=request.operation, content=frozenset(content),
                          purpose=request.purpose, requester=request.requester,
                          required_formalities=required)
            result = classify(observations, hits, named, subjects, grants, asked,
                              self._thresholds(), now=utcnow(), count_uses=not for_output,
                              template_sims=sims)
        with timer.stage("policy"):
            evaluation = policy.evaluate(_facts(request, content, result.faces,
                                                result.covering, subjects))
        verdict, reasons = evaluation.verdict, list(evaluation.reasons)
        if verdict == "needs_consent" and result.formality_gaps:
            reasons += _formality_reasons(policy, request.operation, content,
                                          result.formality_gaps)
        if known:  # core rule: no policy can allow a known (reported, listed) image
            verdict = "deny"
            reasons = [*known, *(r for r in reasons if r.effect == "deny")]
        if minor_in_prompt and "sexual" in content:  # core rule: no override exists
            verdict = "deny"
            reasons = [_MINOR_IN_PROMPT, *(r for r in reasons if r.effect == "deny")]
        if not outcome.claim("worker"):
            raise _Superseded()  # the timeout answered for this request already
        if verdict == "allow" and not for_output:
            verdict, reasons = self._consume_uses(result.faces, result.covering, verdict,
                                                  reasons, parts)
        decision = Decision(
            verdict=verdict, request_id=request_id, policy_version=policy.version,
            reasons=reasons, faces=list(result.faces),
            obligations=list(evaluation.obligations) if verdict == "allow" else [],
            consent_needed=list(result.needs) if verdict == "needs_consent" else [],
            content=sorted(content), latency_ms=dict(timer.stages),
            jurisdictions=list(evaluation.jurisdictions),
        )
        with timer.stage("audit"):
            self._audit_decision(request, decision, text_rules, parts, for_output=for_output)
        if desk is not None:
            self._record_attempts(desk, request, decision)
        return decision.model_copy(update={"latency_ms": dict(timer.stages)})

    @staticmethod
    def _record_attempts(desk: IncidentDesk, request: GateRequest, decision: Decision) -> None:
        """What the people whose faces were refused see (never raises: the decision,
        already audited, stands)."""
        try:
            desk.attempts.record(decision, app_id=request.requester.app_id,
                                 operation=request.operation)
        except Exception:  # noqa: BLE001
            log.error("attempt could not be recorded", extra={"request_id":
                                                              decision.request_id})

    def _search(self, vectors: np.ndarray) -> tuple[list[list[IndexHit]], _Sims]:
        """The 3 best subjects of each face, and (``top2`` rule) its similarity to each
        template of those that reach the permissive threshold."""
        hits = self.follower.search(vectors, 3)
        sims = self.follower.template_similarities(
            vectors, hits, self.settings.permissive_threshold) \
            if self.settings.permissive_rule == "top2" else None
        return hits, sims

    def _mirror_where_it_matters(self, analyses: Sequence[ImageAnalysis],
                                 hits: list[list[IndexHit]], sims: _Sims, timer: StageTimer
                                 ) -> tuple[list[list[IndexHit]], _Sims]:
        """Test-time augmentation only for faces whose reading it could change
        (``classify.mirror_can_matter``): their mirrors and zoomed views are embedded in
        one batch and they are searched again with the averaged vector."""
        faces = [face for analysis in analyses for face in analysis.faces]
        thresholds, margin = self._thresholds(), self.settings.flip_margin
        todo = [i for i, face in enumerate(faces) if face.mirror_deferred and mirror_can_matter(
            hits[i], sims[i] if sims is not None else None, thresholds, margin)]
        if not todo:
            return hits, sims
        with timer.stage("embed_mirror"):
            averaged = self.faces.completed([faces[i] for i in todo])
        with timer.stage("search"):
            again, again_sims = self._search(averaged)
        hits = list(hits)
        for row, i in enumerate(todo):
            hits[i] = again[row]
            if sims is not None and again_sims is not None:
                sims[i] = again_sims[row]
        return hits, sims

    def _thresholds(self) -> Thresholds:
        s = self.settings
        return Thresholds(match=s.match_threshold, allow=s.permissive_threshold,
                          protected_margin=s.protected_margin, min_quality=s.min_quality,
                          min_face_px=s.min_face_px, permissive_rule=s.permissive_rule,
                          poor_quality_allow=s.poor_quality_allow_threshold)

    def _names_in_prompt(self, request: GateRequest) -> list[str]:
        text = f"{request.prompt}\n{request.negative_prompt}".strip()
        if not text:
            return []
        return list(dict.fromkeys(hit.subject_id for hit in self._name_matcher().find(text)))

    def _name_matcher(self) -> Any:
        from gate.text import NameMatcher

        epoch = self.follower.seq
        cached = self._names_cache
        if cached is None or cached[0] != epoch:
            names = {s.subject_id: [s.display_name, *s.aliases]
                     for s in self._parts.store.list_subjects()}
            cached = (epoch, NameMatcher(names))
            self._names_cache = cached
        return cached[1]

    @staticmethod
    def _consume_uses(results: Sequence[FaceResult], covering: Mapping[str, Grant],
                      verdict: str, reasons: list[Reason], parts: Parts
                      ) -> tuple[str, list[Reason]]:
        """Count one use of each limited grant; a grant used up in a race turns into deny."""
        for grant_id in dict.fromkeys(r.grant_id for r in results if r.grant_id):
            if covering[grant_id].max_uses is None:
                continue
            if not parts.store.consume_use(grant_id):
                return "deny", [Reason(rule_id="core.grant_exhausted", effect="deny",
                                       message="the consent grant has no uses left")]
        return verdict, reasons

    # -- failure and audit ---------------------------------------------------------------
    def _fault(self, request: GateRequest, request_id: str, fault: str,
               timer: StageTimer) -> Decision:
        log.error("check failed closed", extra={"request_id": request_id, "fault": fault})
        decision = _denied(request_id, self.policy_for(self._parts).version, fault, timer)
        try:
            self._audit_decision(request, decision, [], self._parts,
                                 for_output=_is_output(request))
        except Exception:  # noqa: BLE001 -- the deny stands even if it cannot be audited
            log.error("audit append failed", extra={"request_id": request_id})
        return decision

    @staticmethod
    def _audit_decision(request: GateRequest, decision: Decision, text_rules: list[str],
                        parts: Parts, *, for_output: bool = False) -> None:
        user_id = request.requester.user_id
        parts.audit.append({
            "kind": "check",
            "stage": "output" if for_output else "input",
            "request_id": decision.request_id,
            "app_id": request.requester.app_id,
            "user_ref": None if user_id is None else
            subject_ref(parts.audit_key, f"user:{request.requester.app_id}:{user_id}"),
            "operation": request.operation,
            "verdict": decision.verdict,
            "rule_ids": sorted({r.rule_id for r in decision.reasons}),
            "subject_refs": sorted({subject_ref(parts.audit_key, f.subject_id)
                                    for f in decision.faces if f.subject_id}),
            "grant_ids": sorted({f.grant_id for f in decision.faces if f.grant_id}),
            "image_sha256s": [img.sha256 for img in request.images],
            "text_rules": text_rules,
            "policy_version": decision.policy_version,
            "jurisdictions": decision.jurisdictions,
            "obligations": decision.obligations,
        })


# -- pure helpers of the decision --------------------------------------------------------
def _output_request(image: bytes, request_id: str, requester: Requester, operation: str,
                    content: Sequence[str], prompt: str,
                    jurisdictions: Sequence[str] = ()) -> GateRequest:
    return GateRequest.model_validate({
        "operation": operation, "images": [ImageInput(role="output", data=image)],
        "content": list(content), "prompt": prompt, "requester": requester,
        "request_id": request_id, "jurisdictions": list(jurisdictions)})


def _is_output(request: GateRequest) -> bool:
    """A ``check_output`` request (one image, role ``output``)."""
    return len(request.images) == 1 and request.images[0].role == "output"


def _known_images(desk: IncidentDesk | None, analyses: Sequence[ImageAnalysis]
                  ) -> list[Reason]:
    """``core.known_image``: a frame of an input matches the blocklist (PDQ distance)."""
    if desk is None:
        return []
    out: list[Reason] = []
    for image_index, analysis in enumerate(analyses):
        if analysis.pdq and desk.blocklist.match_frames(analysis.pdq):
            out.append(Reason(rule_id="core.known_image", effect="deny",
                              message=f"image {image_index} matches a reported or listed "
                                      "image (perceptual hash); it cannot be used"))
    return out


def _denied(request_id: str, policy_version: str, fault: str, timer: StageTimer) -> Decision:
    return Decision(
        verdict="deny", request_id=request_id, policy_version=policy_version,
        reasons=[Reason(rule_id="core.fail_closed", effect="deny",
                        message=f"the gate could not decide safely ({fault}); denied")],
        faces=[], latency_ms=dict(timer.stages))


def _with_total(decision: Decision, started: float) -> Decision:
    total = round((time.perf_counter() - started) * 1000, 3)
    return decision.model_copy(update={"latency_ms": {**decision.latency_ms, "total": total}})


#: ``core.minor_sexual`` for a prompt that describes a child or someone under 18 (the
#: face-level rule covers faces whose apparent age is a minor's).
_MINOR_IN_PROMPT = Reason(
    rule_id="core.minor_sexual", effect="deny",
    message="sexual content with a person the prompt describes as a minor is never allowed")


def _effective_content(request: GateRequest) -> tuple[set[str], list[str], bool]:
    """Declared categories, plus what the prompt says (screened), plus nudify = sexual;
    the screen's rule ids; whether the prompt describes a minor."""
    from gate.text import screen_prompt

    content: set[str] = set(request.content)
    screen = screen_prompt(request.prompt, request.negative_prompt)
    content |= set(screen.categories)
    if request.operation == "nudify":
        content.add("sexual")
    if len(content) > 1:
        content.discard("general")
    return content, list(screen.rule_hits), screen.minor


#: Per face, its similarity to each template of the subjects it may read as (``top2``).
_Sims = list[dict[str, list[float]]] | None


def _observations(request: GateRequest, analyses: Sequence[ImageAnalysis]
                  ) -> tuple[list[Observation], np.ndarray]:
    """Every face of the request, numbered across images, and their templates."""
    out: list[Observation] = []
    vectors: list[np.ndarray] = []
    for image_index, (img, analysis) in enumerate(zip(request.images, analyses, strict=True)):
        for face in analysis.faces:
            n = len(out)
            ref = f"i{image_index}f{n}" if face.frame_index == 0 else \
                f"i{image_index}t{face.frame_index}f{n}"
            out.append(Observation(
                face_ref=ref, image_index=image_index, frame_index=face.frame_index,
                role=img.role, bbox=(round(face.bbox_px[0]), round(face.bbox_px[1]),
                                     round(face.bbox_px[2]), round(face.bbox_px[3])),
                det_score=round(face.det_score, 4), quality=round(face.quality, 4),
                size_px=round(face.size_px), age_band=face.age_band,
                apparent_age=None if face.age_years is None else round(face.age_years, 1)))
            vectors.append(face.vector)
    matrix = np.stack(vectors) if vectors else np.zeros((0, 1), np.float32)
    return out, matrix


def _facts(request: GateRequest, content: set[str], faces: Sequence[FaceResult],
           covering: Mapping[str, Grant], subjects: Mapping[str, Subject]) -> RequestFacts:
    def minor(subject_id: str | None) -> bool:
        subject = subjects.get(subject_id) if subject_id else None
        return bool(subject and subject.guardian)

    return RequestFacts(
        operation=request.operation, content=frozenset(content),
        app_id=request.requester.app_id, user_id=request.requester.user_id,
        faces=tuple(FaceFacts(face_ref=r.face_ref, identity=r.identity, role=r.role,
                              source=r.source, subject_status=r.subject_status,
                              age_band=r.age_band or "unknown",
                              grant_purpose=covering[r.grant_id].purpose if r.grant_id
                              else None,
                              grant_formalities=covering[r.grant_id].formalities
                              if r.grant_id else frozenset(),
                              subject_minor=minor(r.subject_id))
                    for r in faces),
    )


def _formality_reasons(policy: PolicyEngine, operation: str, content: set[str],
                       gaps: Mapping[str, frozenset[str]]) -> list[Reason]:
    """Why a grant of the right scope did not cover a face: the requirement ids (and
    sources) of the formalities it lacked."""
    if not isinstance(policy, PolicySet):
        return []
    out: list[Reason] = []
    for face_ref, missing in gaps.items():
        for need in policy.formality_needs(operation, content):
            if need.formality in missing:
                out.append(Reason(
                    rule_id=need.requirement.id, effect="needs_consent", face_ref=face_ref,
                    message=f"the grant covers this use, but consent must be given as "
                            f"{need.formality.replace('_', ' ')} here: "
                            f"{need.requirement.message}"))
    return out
