"""``SubjectLifecycle``: the one owner of a person's life in the gate.

Enrol, change status, grant, revoke, erase and export: every door (SDK, CLI, sidecar
routes, portal, consent requests, retention) calls these methods, so each rule holds
whichever door was used:

- **Protect me means now and everywhere.** Switching to ``protected`` revokes every
  active grant of the person in the same transaction, and their grant tokens appear in
  the revocation feed before the call returns.
- **Erasure erases.** The person's rows in every table that holds them (each module
  registers an ``ErasureHook``), in one transaction; then their index entries, any
  persisted index file and the analysis cache; then the revocation feed lists their
  grant tokens. Nothing waits for a later retention run.
- **Every change is durable and audited** before the method returns (keyed subject
  references only; no names, no templates in the audit log).

This module depends on Protocols (``FaceReader``, ``IndexSync``, ``ConsentStore``,
``AuditSink``), never on ``gate.engine``.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol

import numpy as np

from gate.audit.chain import AuditSink, subject_ref
from gate.clock import aware, utcnow
from gate.consent.store import ConsentStore, ErasureHook, ExportHook
from gate.consent.tokens import GrantTokens
from gate.errors import ConsentError, EnrollmentError, InvalidRequest, NotFound
from gate.identity.index import IndexHit
from gate.identity.templates import TemplateCipher
from gate.pipeline import StillAnalysis
from gate.types import (
    CONTENT_CATEGORIES,
    OPERATIONS,
    ConsentRecord,
    Grant,
    Requester,
    Subject,
    SubjectStatus,
)

log = logging.getLogger("gate.consent")

#: Templates kept per subject at most (the best-quality photos of an enrolment).
MAX_TEMPLATES = 10


class AlreadyRevoked(ConsentError):
    """The grant was revoked before; revoking it again changes nothing."""

    code = "already_revoked"


class FaceReader(Protocol):
    """Reads faces from still pictures (implemented by ``gate.pipeline.FaceAnalyzer``)."""

    @property
    def pack_id(self) -> str: ...

    def analyse_still(self, data: bytes, *, what: str = "picture") -> StillAnalysis: ...


class IndexSync(Protocol):
    """The 1:N index's view of the store (implemented by ``IndexFollower``)."""

    @property
    def cipher(self) -> TemplateCipher: ...

    def sync(self) -> int: ...

    def forget(self, subject_id: str) -> None: ...

    def search(self, queries: np.ndarray, k: int) -> list[list[IndexHit]]: ...


class SubjectLifecycle:
    """See the module doc."""

    def __init__(self, store: ConsentStore, index: IndexSync, faces: FaceReader,
                 audit: AuditSink, audit_key: bytes, tokens: GrantTokens | None = None, *,
                 min_face_px: int = 24, erasure_hooks: Sequence[ErasureHook] = (),
                 export_hooks: Sequence[ExportHook] = (),
                 clock: Callable[[], datetime] = utcnow) -> None:
        self.store = store
        self.index = index
        self.faces = faces
        self.audit = audit
        self.audit_key = audit_key
        self.tokens = tokens
        self.min_face_px = min_face_px
        self.erasure_hooks = list(erasure_hooks)
        self.export_hooks = list(export_hooks)
        self.clock = clock

    def ref(self, subject_id: str) -> str:
        """The keyed, non-identifying reference of a subject (audit log, activity)."""
        return subject_ref(self.audit_key, subject_id)

    def _audit(self, kind: str, subject_ids: Iterable[str], detail: str | None = None) -> None:
        event: dict[str, Any] = {"kind": kind,
                                 "subject_refs": sorted(self.ref(s) for s in subject_ids)}
        if detail is not None:
            event["detail"] = detail
        self.audit.append(event)

    # -- enrolment ------------------------------------------------------------------------
    def enroll(self, images: Sequence[bytes], display_name: str,
               status: SubjectStatus = "protected", owner: Requester | None = None,
               aliases: Sequence[str] = (), guardian: bool = False) -> Subject:
        """Enrol one person from photos that each show exactly one face (one template
        per photo, the best ``MAX_TEMPLATES`` by quality)."""
        if not images:
            raise EnrollmentError("enrolment needs at least one photo")
        if status not in ("protected", "consenting"):
            raise InvalidRequest("status must be 'protected' or 'consenting'", field="status")
        name = display_name.strip()
        if not name or len(name) > 200:
            raise InvalidRequest("display_name must be 1-200 characters", field="display_name")
        scored = [self.enrolment_template(data, i) for i, data in enumerate(images)]
        kept = sorted(scored, key=lambda s: -s[1])[:MAX_TEMPLATES]
        subject = Subject(
            subject_id=f"sub_{uuid.uuid4().hex[:20]}", display_name=name, status=status,
            owner=owner, aliases=[a.strip() for a in aliases if a.strip()],
            model_pack=self.faces.pack_id, template_count=len(kept), guardian=guardian,
            created_at=self.clock(),
        )
        cipher = self.index.cipher
        blobs = [cipher.encrypt(v, subject_id=subject.subject_id, pack_id=subject.model_pack)
                 for v, _ in kept]
        self.store.add_subject(subject, blobs, cipher.key_id)
        self.index.sync()
        self._audit("enroll", [subject.subject_id])
        return subject

    def enrolment_template(self, data: bytes, position: int) -> tuple[np.ndarray, float]:
        """The template of an enrolment photo's one face, and its quality."""
        still = self.faces.analyse_still(data, what=f"enrolment photo {position}")
        if len(still.faces) != 1:
            what = "no face" if not still.faces else f"{len(still.faces)} faces"
            raise EnrollmentError(f"enrolment photo {position} shows {what}; it must show "
                                  "exactly one face")
        face = still.faces[0]
        if face.size_px < self.min_face_px:
            raise EnrollmentError(f"enrolment photo {position}: the face is too small")
        return face.vector, face.quality

    # -- reading --------------------------------------------------------------------------
    def get_subject(self, subject_id: str) -> Subject:
        subject = self.store.get_subject(subject_id)
        if subject is None:
            raise NotFound("no such subject")
        return subject

    def list_subjects(self) -> list[Subject]:
        return self.store.list_subjects()

    def get_grant(self, grant_id: str) -> Grant:
        grant = self.store.get_grant(grant_id)
        if grant is None:
            raise NotFound("no such grant")
        return grant

    def list_grants(self, subject_id: str | None = None) -> list[Grant]:
        return self.store.list_grants(subject_id)

    def templates_of(self, subject_id: str) -> list[np.ndarray]:
        """The subject's decrypted templates (never leave the process)."""
        pack = self.faces.pack_id
        cipher = self.index.cipher
        return [cipher.decrypt(b, subject_id=subject_id, pack_id=pack)
                for b in self.store.subject_templates(subject_id, pack)]

    # -- consent ----------------------------------------------------------------------------
    def set_status(self, subject_id: str, status: SubjectStatus) -> Subject:
        """``protected`` ("never generate me") or ``consenting``. Protecting revokes every
        active grant of the person, and their tokens reach the revocation feed at once."""
        if status not in ("protected", "consenting"):
            raise InvalidRequest("status must be 'protected' or 'consenting'", field="status")
        subject, revoked = self.store.set_status(subject_id, status, at=self.clock())
        self._audit("set_status", [subject_id], status)
        for grant_id in revoked:
            self._audit("revoke", [subject_id], grant_id)
        if revoked:
            self._sync_revocations()
        return subject

    def grant(self, subject_id: str, *, app_id: str, operations: Iterable[str],
              content: Iterable[str] = ("general",), user_id: str | None = None,
              purpose: str | None = None, expires_at: datetime | None = None,
              not_before: datetime | None = None, max_uses: int | None = None,
              consent: ConsentRecord | Mapping[str, Any] | None = None) -> Grant:
        """Record a consent grant (durable before it returns) and sign its token.

        A protected person grants nothing: switch to ``consenting`` first."""
        ops = list(dict.fromkeys(operations))
        cats = list(dict.fromkeys(content))
        bad = [o for o in ops if o not in OPERATIONS] + \
            [c for c in cats if c not in CONTENT_CATEGORIES]
        if bad or not ops or not cats:
            raise ConsentError("a grant needs known, non-empty operations and content")
        if max_uses is not None and not 1 <= max_uses <= 2**31 - 1:
            raise ConsentError("max_uses must be between 1 and 2147483647")
        if not app_id or len(app_id) > 128:
            raise InvalidRequest("app_id must be 1-128 characters", field="app_id")
        subject = self.get_subject(subject_id)
        if subject.status == "protected":
            raise ConsentError("this person is protected (opted out): switch them to "
                               "'consenting' before recording a grant")
        record = ConsentRecord.model_validate(consent) if isinstance(consent, Mapping) \
            else consent
        grant = Grant(
            grant_id=f"gr_{uuid.uuid4().hex[:20]}", subject_id=subject_id, app_id=app_id,
            user_id=user_id, operations=ops, content=cats, purpose=purpose,
            not_before=aware(not_before), expires_at=aware(expires_at), max_uses=max_uses,
            created_at=self.clock(), consent=record,
        )
        self.store.add_grant(grant)
        self._audit("grant", [subject_id], grant.grant_id)
        return self.tokens.issue(grant, now=self.clock()) if self.tokens else grant

    def token_for(self, grant_id: str, app_id: str | None = None) -> Grant:
        """A fresh signed token for an existing, active grant (of ``app_id`` if given)."""
        if self.tokens is None:
            raise ConsentError("grant tokens are not configured on this gate")
        return self.tokens.reissue(self.store.get_grant(grant_id), app_id=app_id,
                                   now=self.clock())

    def revoke(self, grant_id: str) -> Grant:
        """Revoke at once: the grant never allows again, its token is listed as revoked.
        Revoking a revoked grant raises ``AlreadyRevoked``."""
        grant, changed = self.store.revoke_grant(grant_id, self.clock())
        if not changed:
            raise AlreadyRevoked(f"the grant was already revoked at "
                                 f"{grant.revoked_at.isoformat() if grant.revoked_at else '?'}")
        self._audit("revoke", [grant.subject_id], grant_id)
        self._sync_revocations()
        return grant

    def _sync_revocations(self) -> None:
        if self.tokens is not None:
            self.tokens.sync(self.store.epoch(), force=True, now=self.clock())

    # -- erasure and export ----------------------------------------------------------------
    def erase(self, subject_id: str) -> None:
        """Erase the person everywhere (see module doc); ``NotFound`` when unknown."""
        found = self.store.delete_subject(subject_id, subject_ref=self.ref(subject_id),
                                          hooks=self.erasure_hooks)
        self.index.forget(subject_id)
        self.index.sync()
        self._sync_revocations()
        if not found:
            raise NotFound("no such subject")
        self._audit("erase", [subject_id])

    def export(self, subject_id: str) -> dict[str, Any]:
        """Everything the gate keeps about the person, as JSON-ready data (GDPR Art. 15
        and 20). Never templates: only how many are stored."""
        subject = self.get_subject(subject_id)
        now = self.clock()
        grants = sorted(self.list_grants(subject_id), key=lambda g: g.created_at, reverse=True)
        rows = self.store.export_rows(subject_id, subject_ref=self.ref(subject_id),
                                      hooks=self.export_hooks)
        return {
            "exported_at": now.isoformat(),
            "subject": {**subject.model_dump(mode="json"),
                        "template_count": subject.template_count},
            "face_templates": (f"{subject.template_count} encrypted templates are stored; "
                               "they are never exported"),
            "grants": [{**g.model_dump(mode="json", exclude={"token"}),
                        "active": g.is_active(now),
                        "uses_left": None if g.max_uses is None else max(0, g.max_uses - g.uses)}
                       for g in grants],
            **rows,
        }
