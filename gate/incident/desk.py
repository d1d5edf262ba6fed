"""``IncidentDesk``: incident response, composed around one gate's database and audit log.

- ``label`` marks and labels a generated image and records its mark
  (``gate.marking.output``, ``gate.incident.marks``);
- ``trace`` finds the request (and its audit record) an image came from
  (``gate.incident.trace``);
- ``report`` takes a takedown request: its hashes join the blocklist at once
  (provisionally), a trace runs, the report carries a deadline (``gate.incident.reports``);
- ``blocklist`` is what ``core.known_image`` matches every input and output against
  (``gate.incident.blocklist``); ``attempts`` is what enrolled people are shown
  (``gate.incident.attempts``).

``FaceGate`` builds one when its consent store is SQL (the embedded SQLite default and
PostgreSQL); the SDK methods ``label_output``, ``trace`` and ``report`` are its doors.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy.engine import Engine

from gate.audit.chain import AuditSink
from gate.clock import utcnow
from gate.errors import InvalidRequest
from gate.imaging.decode import DecodeLimits
from gate.incident.attempts import Attempts
from gate.incident.blocklist import Blocklist
from gate.incident.marks import SqlMarkIndex
from gate.incident.pdq import hash_frames, normalize_pdq
from gate.incident.reports import DEFAULT_TAKEDOWN_HOURS, REASONS, Report, Reports
from gate.incident.trace import Trace, Tracer
from gate.marking.output import Labelled, OutputLabeller, VisibleLabel
from gate.marking.provenance import ManifestSigner, read_gate_request_id

if TYPE_CHECKING:
    from gate.policy.jurisdictions import LabelPlan


def mark_key_id(key: bytes) -> str:
    """A public name for a mark key (its SHA-256 prefix)."""
    return hashlib.sha256(b"consent-gate mark key\0" + key).hexdigest()[:16]


class IncidentDesk:
    """See the module doc."""

    def __init__(self, engine: Engine, audit: AuditSink, *, mark_keys: Sequence[bytes],
                 limits: DecodeLimits, resolve_refs: Callable[[Sequence[str]], list[str]],
                 signer: ManifestSigner | None = None, content_producer: str = "consent-gate",
                 takedown_hours: int = DEFAULT_TAKEDOWN_HOURS,
                 clock: Callable[[], datetime] = utcnow) -> None:
        if not mark_keys:
            raise ValueError("the incident desk needs a mark key")
        self.engine = engine
        self.audit = audit
        self.limits = limits
        self.takedown_hours = takedown_hours
        self.mark_key_id = mark_key_id(mark_keys[0])
        self.marks = SqlMarkIndex(engine)
        self.blocklist = Blocklist(engine)
        self.attempts = Attempts(engine)
        self.reports = Reports(engine, self.blocklist, audit, clock=clock)
        self.labeller = OutputLabeller(mark_keys[0], limits=limits, signer=signer,
                                       content_producer=content_producer)
        self.tracer = Tracer(self.marks, audit, mark_keys, limits=limits,
                             resolve_refs=resolve_refs, read_c2pa=read_gate_request_id)

    # -- outputs ---------------------------------------------------------------------------
    def label(self, data: bytes, *, request_id: str, obligations: Sequence[str] = (),
              plan: LabelPlan | None = None, locale: str | None = None,
              grant_ids: Sequence[str] = (), policy_version: str = "",
              signer: ManifestSigner | None = None) -> Labelled:
        """Mark and label one output (see ``gate.marking.output``); the mark is recorded
        (durable) before the labelled bytes are returned."""
        if not request_id or len(request_id) > 64:
            raise InvalidRequest("request_id must be 1 to 64 characters")
        visible = None
        if "label_visible" in obligations:
            spec = plan.visible if plan is not None else None
            if spec is None:
                visible = VisibleLabel("AI-generated", "bottom-right", 0.05)
            else:
                visible = VisibleLabel(spec.text_for(locale), spec.positions[0],
                                       spec.min_text_height_ratio)
        labeller = self.labeller if signer is None else OutputLabeller(
            self.labeller.mark_key, limits=self.limits, signer=signer,
            content_producer=self.labeller.content_producer)
        labelled = labeller.label(data, request_id=request_id, visible=visible,
                                  c2pa="embed_c2pa_manifest" in obligations,
                                  grant_ids=grant_ids, policy_version=policy_version)
        if labelled.digest is not None:
            self.marks.record(labelled.digest, request_id, self.mark_key_id)
        return labelled

    def trace(self, data: bytes) -> Trace:
        return self.tracer.trace(data)

    # -- reports ---------------------------------------------------------------------------
    def report(self, *, image: bytes | None = None, pdq: str | Sequence[str] | None = None,
               reason: str = "ncii", subject_id: str | None = None,
               contact: str | None = None, takedown_hours: int | None = None) -> Report:
        """Intake (see ``gate.incident.reports``): hashes blocked, trace attached.

        The image is decoded, hashed and traced in memory, then dropped: only its PDQ
        hashes and SHA-256 are kept.
        """
        if image is None and not pdq:
            raise InvalidRequest("a report needs the image or its PDQ hash")
        if reason not in REASONS:
            raise InvalidRequest(f"reason must be one of {', '.join(REASONS)}", field="reason")
        hashes: list[str] = []
        if pdq:
            hashes += [normalize_pdq(h) for h in ([pdq] if isinstance(pdq, str) else pdq)]
        trace: Trace | None = None
        sha = None
        if image is not None:
            from gate.imaging.decode import decode_image

            decoded = decode_image(image, self.limits)
            frames = hash_frames(decoded)
            usable = [f.hash for f in frames if f.usable]
            if not usable and not hashes:
                raise InvalidRequest("the image is too plain to hash reliably (PDQ quality "
                                     "below 50); send its PDQ hash from a better copy")
            hashes += usable
            sha = decoded.sha256
            trace = self.trace(image)
        report = self.reports.open(
            reason=reason, hashes=list(dict.fromkeys(hashes)), image_sha256=sha,
            takedown_hours=takedown_hours or self.takedown_hours, subject_id=subject_id,
            contact=contact)
        if trace is not None:
            report = self.reports.attach_trace(report.report_id, trace)
        return report
