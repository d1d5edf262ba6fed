"""The marks the gate issued, in the database: ``MarkIndex`` for ``MarkMatcher``.

Each labelled output records its mark digest (hex), the request id and the mark key's id,
with the digest's five bit bands in indexed columns: a digest within 4 bits of what was
read shares at least one band with it exactly (pigeonhole), so five indexed equality
lookups find every candidate however many marks were issued.
"""

from __future__ import annotations

from sqlalchemy import insert, or_, select
from sqlalchemy.engine import Engine

from gate.clock import utcnow
from gate.incident import tables as t
from gate.marking.watermark import MarkMatch, mark_bands

BANDS = 5


class SqlMarkIndex:
    """Issued marks (see module doc). Satisfies ``gate.marking.watermark.MarkIndex``."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def record(self, digest: bytes, request_id: str, key_id: str) -> None:
        bands = mark_bands(digest, BANDS)
        with self.engine.begin() as conn:
            conn.execute(insert(t.marks).values(
                digest=digest.hex(), request_id=request_id, key_id=key_id,
                created_at=utcnow(), **{f"band{i}": b for i, b in enumerate(bands)}))

    def within(self, bits: bytes, max_distance: int) -> list[MarkMatch]:
        if max_distance >= BANDS:
            raise ValueError(f"the band index finds marks within {BANDS - 1} bits")
        bands = mark_bands(bits, BANDS)
        m = t.marks.c
        columns = (m.band0, m.band1, m.band2, m.band3, m.band4)
        with self.engine.connect() as conn:
            rows = conn.execute(select(m.digest).where(or_(
                *(col == band for col, band in zip(columns, bands, strict=True))))
                .distinct()).all()
        query = int.from_bytes(bits, "big")
        found = []
        for (hex_digest,) in rows:
            digest = bytes.fromhex(hex_digest)
            distance = (int.from_bytes(digest, "big") ^ query).bit_count()
            if distance <= max_distance:
                found.append(MarkMatch(digest, distance))
        return sorted(found, key=lambda match: match.distance)

    def requests_of(self, digest: bytes) -> list[str]:
        m = t.marks.c
        with self.engine.connect() as conn:
            return [r[0] for r in conn.execute(
                select(m.request_id).where(m.digest == digest.hex()).distinct())]
