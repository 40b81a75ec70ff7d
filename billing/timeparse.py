"""RFC 3339 UTC timestamps with milliseconds, in and out, as integer ms since the epoch."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Final

EPOCH: Final = datetime(1970, 1, 1)
MS: Final = timedelta(milliseconds=1)


def to_ms(dt: datetime) -> int:
    """Milliseconds since the epoch, floored; naive arithmetic, so year 9999 at -14:00 does not overflow."""
    offset = dt.utcoffset()
    if offset is None:
        raise ValueError("no time zone; use Z (UTC) or an offset")
    return (dt.replace(tzinfo=None) - EPOCH - offset) // MS


def parse_ms(value: str) -> int:
    """A timestamp in a plan file or a test: ISO 8601 with an offset, whole milliseconds, from 1970."""
    try:
        dt = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{value!r} is not an RFC 3339 timestamp") from None
    if dt.microsecond % 1000:
        raise ValueError(f"{value!r}: precision finer than a millisecond")
    ms = to_ms(dt)
    if ms < 0:
        raise ValueError(f"{value!r}: before 1970")
    return ms


def format_ms(ms: int) -> str:
    """2026-11-27T10:00:00.123Z."""
    dt = (EPOCH + ms * MS).replace(tzinfo=UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S") + f".{ms % 1000:03d}Z"
