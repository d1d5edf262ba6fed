"""The known-image blocklist: PDQ hashes no input or output may match (``core.known_image``).

The table is the source of truth; every gate keeps a ``PdqBlocklist`` in memory (a few
MB per 100k hashes) and reloads it when the change feed says the list changed
(``blocklist`` rows in ``changes``), so an entry added through one replica blocks on every
replica's next check. Entries come from takedown reports (provisional until an operator
decides), from hash lists trust-and-safety teams exchange (ThreatExchange / HMA formats,
``gate.incident.hashlists``) and from operators.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import delete, insert, select, update
from sqlalchemy.engine import Connection, Engine

from gate.clock import utcnow
from gate.consent.store import append_change
from gate.incident import tables as t
from gate.incident.hashlists import HashListEntry
from gate.incident.pdq import FrameHash, PdqBlocklist, PdqMatch, normalize_pdq


def record_change(conn: Connection) -> None:
    """Tell every replica (through the change feed) that the blocklist changed."""
    append_change(conn, "blocklist")


class Blocklist:
    """The blocklist table and its in-memory matcher (see module doc)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._lock = threading.Lock()
        self._matcher = PdqBlocklist()
        self.reload()

    def reload(self) -> int:
        b = t.blocklist.c
        with self.engine.connect() as conn:
            rows = conn.execute(select(b.entry_id, b.pdq)).all()
        matcher = PdqBlocklist((r.entry_id, r.pdq) for r in rows)
        with self._lock:
            self._matcher = matcher
        return len(rows)

    def __len__(self) -> int:
        return len(self._matcher)

    def match_frames(self, frames: Sequence[FrameHash]) -> list[PdqMatch]:
        return self._matcher.match_frames(frames)

    def match(self, values: Sequence[str]) -> list[PdqMatch]:
        return self._matcher.match_many(values)

    def add(self, hashes: Iterable[str], *, source: str, list_name: str | None = None,
            report_id: str | None = None, provisional: bool = False,
            meta: dict[str, Any] | None = None, quality: int | None = None) -> list[str]:
        """Add hashes (durable, then live here; other replicas on their next check)."""
        rows: list[dict[str, Any]] = [
                {"entry_id": f"blk_{uuid.uuid4().hex[:20]}", "pdq": normalize_pdq(h),
                 "quality": quality, "source": source, "list_name": list_name,
                 "report_id": report_id, "provisional": provisional, "meta": meta,
                 "added_at": utcnow()} for h in dict.fromkeys(hashes)]
        ids: list[str] = [r["entry_id"] for r in rows]
        if not rows:
            return []
        with self.engine.begin() as conn:
            conn.execute(insert(t.blocklist), rows)
            record_change(conn)
        self.reload()
        return ids

    def add_entries(self, entries: Iterable[HashListEntry], *, list_name: str,
                    chunk: int = 10_000) -> int:
        """Bulk import (one transaction, one reload): a hash list of any size."""
        now = utcnow()
        rows = [{"entry_id": f"blk_{uuid.uuid4().hex[:20]}", "pdq": normalize_pdq(e.signal),
                 "quality": None, "source": "import", "list_name": e.collab or list_name,
                 "report_id": None, "provisional": False,
                 "meta": {"category": e.category, "tags": list(e.tags)}, "added_at": now}
                for e in entries]
        if not rows:
            return 0
        with self.engine.begin() as conn:
            for start in range(0, len(rows), chunk):
                conn.execute(insert(t.blocklist), rows[start:start + chunk])
            record_change(conn)
        self.reload()
        return len(rows)

    def remove_report(self, report_id: str, *, only_provisional: bool = True) -> int:
        b = t.blocklist.c
        where = [b.report_id == report_id]
        if only_provisional:
            where.append(b.provisional.is_(True))
        with self.engine.begin() as conn:
            n = int(conn.execute(delete(t.blocklist).where(*where)).rowcount)
            record_change(conn)
        self.reload()
        return n

    def confirm_report(self, report_id: str) -> int:
        b = t.blocklist.c
        with self.engine.begin() as conn:
            n = int(conn.execute(update(t.blocklist).where(b.report_id == report_id)
                                 .values(provisional=False)).rowcount)
            record_change(conn)
        return n

    def remove(self, entry_id: str) -> bool:
        with self.engine.begin() as conn:
            n = conn.execute(delete(t.blocklist)
                             .where(t.blocklist.c.entry_id == entry_id)).rowcount
            record_change(conn)
        self.reload()
        return bool(n)

    def entries(self, limit: int = 1000, offset: int = 0) -> list[dict[str, Any]]:
        b = t.blocklist.c
        with self.engine.connect() as conn:
            rows = conn.execute(select(t.blocklist).order_by(b.added_at.desc())
                                .limit(limit).offset(offset)).all()
        return [{"entry_id": r.entry_id, "pdq": r.pdq, "quality": r.quality,
                 "source": r.source, "list_name": r.list_name, "report_id": r.report_id,
                 "provisional": r.provisional, "added_at": r.added_at.isoformat()}
                for r in rows]

    def export(self) -> list[HashListEntry]:
        b = t.blocklist.c
        with self.engine.connect() as conn:
            rows = conn.execute(select(b.pdq, b.list_name, b.meta)
                                .where(b.provisional.is_(False))).all()
        return [HashListEntry(signal=r.pdq, collab=r.list_name or "consent-gate",
                              tags=tuple((r.meta or {}).get("tags", ())))
                for r in rows]
