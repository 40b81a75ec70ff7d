"""RFC 3339 UTC timestamps with milliseconds, in and out."""

from __future__ import annotations

from datetime import UTC, datetime

from billing.errors import bad_request


def parse_ms(value: str, field: str) -> int:
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise bad_request("bad_timestamp", f"{field}: {value!r} is not an RFC 3339 timestamp") from None
    if dt.tzinfo is None:
        raise bad_request("bad_timestamp", f"{field}: {value!r} has no time zone; use Z (UTC)")
    if dt.microsecond % 1000:
        raise bad_request("bad_timestamp", f"{field}: precision finer than a millisecond")
    ms = (
        int(dt.timestamp() * 1000)
        if dt.microsecond == 0
        else (int(dt.replace(microsecond=0).timestamp()) * 1000 + dt.microsecond // 1000)
    )
    if ms < 0:
        raise bad_request("bad_timestamp", f"{field}: before 1970")
    return ms


def format_ms(ms: int) -> str:
    dt = datetime.fromtimestamp(ms // 1000, tz=UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S") + f".{ms % 1000:03d}Z"
