"""``trace``: where did this image come from?

A labelled output carries an invisible mark (a keyed digest of its request id) and, when
C2PA signing is configured, a signed manifest naming the request. ``Tracer.trace`` reads
the C2PA manifest first (cheap, exact when present, valid, and naming a request this gate
decided), then the
watermark with every mark key of the keyring (about a second per key: it searches scales
and offsets, so a re-encoded, resized or cropped copy is still found), and maps a match
to its request and to the audit record of that request's decision, whose place in the
hash chain it verifies.

An unmarked photo gives ``found: false``, never somebody else's record: the watermark
must be present (its sync pattern far above chance), the digest within 4 bits of exactly
one issued mark, and the mark must name one request.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from gate.audit.chain import AuditRecord, AuditSink, segment_verifies
from gate.imaging.decode import DecodeLimits, decode_image
from gate.incident.marks import SqlMarkIndex
from gate.marking.labels import has_c2pa
from gate.marking.watermark import MarkMatcher, TiledWatermarker


class TraceRecord(BaseModel):
    """The audit record of the traced request's decision (no pixels, no names)."""

    model_config = ConfigDict(frozen=True)

    seq: int
    at: str
    app_id: str | None = None
    user_ref: str | None = Field(default=None, description="Keyed, pseudonymous user id.")
    operation: str | None = None
    verdict: str | None = None
    rule_ids: list[str] = Field(default_factory=list)
    subject_refs: list[str] = Field(default_factory=list)
    subject_ids: list[str] = Field(default_factory=list,
                                   description="Subjects still enrolled (refs resolved).")
    grant_ids: list[str] = Field(default_factory=list)
    policy_version: str | None = None
    hash: str
    chain_verified: bool = Field(description="The record hashes to its stored hash and "
                                             "links to its neighbours in the chain.")


class Trace(BaseModel):
    """What ``FaceGate.trace`` found about an image."""

    model_config = ConfigDict(frozen=True)

    found: bool
    request_id: str | None = None
    source: Literal["watermark", "c2pa"] | None = None
    #: Bits between the mark read and the one issued (watermark only).
    distance_bits: int | None = None
    record: TraceRecord | None = None


NOT_FOUND = Trace(found=False)


class Tracer:
    """See the module doc."""

    def __init__(self, marks: SqlMarkIndex, audit: AuditSink, mark_keys: Sequence[bytes], *,
                 limits: DecodeLimits, resolve_refs: Callable[[Sequence[str]], list[str]],
                 read_c2pa: Callable[[bytes], str | None] | None = None) -> None:
        self.marks = marks
        self.audit = audit
        self.watermarkers = [TiledWatermarker(k) for k in mark_keys]
        self.matcher = MarkMatcher(marks)
        self.limits = limits
        self.resolve_refs = resolve_refs
        self.read_c2pa = read_c2pa

    def trace(self, data: bytes) -> Trace:
        if self.read_c2pa is not None and has_c2pa(data):
            request_id = self.read_c2pa(data)
            # a valid manifest naming a request this gate decided (else: read the mark)
            if request_id is not None and self.record_of(request_id) is not None:
                return self._found(request_id, "c2pa", None)
        decoded = decode_image(data, self.limits)
        pixels = decoded.frames[0].pixels
        for watermarker in self.watermarkers:
            match = self.matcher.match(watermarker.extract(pixels))
            if match is None:
                continue
            requests = self.marks.requests_of(match.digest)
            if len(requests) == 1:
                return self._found(requests[0], "watermark", match.distance)
            return NOT_FOUND  # two requests under one digest: cannot attribute
        return NOT_FOUND

    def _found(self, request_id: str, source: Literal["watermark", "c2pa"],
               distance: int | None) -> Trace:
        return Trace(found=True, request_id=request_id, source=source,
                     distance_bits=distance, record=self.record_of(request_id))

    def record_of(self, request_id: str) -> TraceRecord | None:
        """The decision (``check`` event) of ``request_id`` and its chain check."""
        events = [e for e in self.audit.for_request(request_id)
                  if e.event.get("kind") == "check"]
        if not events:
            return None
        inputs = [e for e in events if e.event.get("stage", "input") == "input"]
        event = (inputs or events)[0]  # the input decision (output screenings follow it)
        return _record(event, self.audit.around(event.seq), self.resolve_refs)


def _record(event: AuditRecord, segment: Sequence[AuditRecord],
            resolve_refs: Callable[[Sequence[str]], list[str]]) -> TraceRecord:
    body: dict[str, Any] = event.event
    refs = [str(r) for r in body.get("subject_refs") or []]
    return TraceRecord(
        seq=event.seq, at=event.at, app_id=body.get("app_id"), user_ref=body.get("user_ref"),
        operation=body.get("operation"), verdict=body.get("verdict"),
        rule_ids=list(body.get("rule_ids") or []), subject_refs=refs,
        subject_ids=resolve_refs(refs), grant_ids=list(body.get("grant_ids") or []),
        policy_version=body.get("policy_version"), hash=event.hash,
        chain_verified=segment_verifies(segment, event.seq))
