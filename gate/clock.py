"""The one UTC helper: every timestamp the gate stores or compares is timezone-aware UTC.

SQLite hands back naive datetimes for ``DateTime(timezone=True)`` columns; ``aware``
reads such a value as the UTC it was written in. ``parse_utc`` reads ISO-8601 text (audit
events keep their time as text).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import overload


def utcnow() -> datetime:
    """Now, timezone-aware, in UTC."""
    return datetime.now(UTC)


@overload
def aware(value: datetime) -> datetime: ...
@overload
def aware(value: None) -> None: ...
def aware(value: datetime | None) -> datetime | None:
    """``value`` with UTC attached when it is naive (as stored); ``None`` stays ``None``."""
    if value is None:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def parse_utc(text: str) -> datetime | None:
    """An ISO-8601 timestamp as an aware datetime, or ``None`` when it is not one."""
    try:
        return aware(datetime.fromisoformat(text))
    except (TypeError, ValueError):
        return None


def unix_seconds(value: datetime) -> int:
    """Whole Unix seconds of ``value`` (naive values are UTC)."""
    return int(aware(value).timestamp())
