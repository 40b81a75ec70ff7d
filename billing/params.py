"""Typed request parameters: every value a route reads is checked here, before any query runs.

Patterns are matched whole with `re.fullmatch` (a `$` would let a trailing newline through,
and that newline would reach a header). The OpenAPI spec carries the same patterns in the
ECMA-262 spelling JSON Schema uses, `^...$`, where `$` is the end of the input. Instants are
RFC 3339 date-times with an offset, inside SUPPORTED; anything finer than a millisecond is
floored, which selects exactly the same intervals because every stored timestamp is a whole
millisecond.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Final, Literal

from pydantic import AfterValidator, AwareDatetime, BeforeValidator, Field, GetCoreSchemaHandler, GetJsonSchemaHandler
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema, core_schema

from billing.timeparse import parse_ms, to_ms

MIN_INSTANT: Final = "1970-01-01T00:00:00Z"
MAX_INSTANT: Final = "9999-01-01T00:00:00Z"
MIN_MS: Final = 0
MAX_MS: Final = parse_ms(MAX_INSTANT)
RFC3339: Final = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?([Zz]|[+-][0-9]{2}:[0-9]{2})"
)

TENANT: Final = r"[a-z0-9][a-z0-9._-]{0,62}"
TENANT_RE: Final = re.compile(TENANT)  # matched whole: where keys are created and plans assign tenants
FUNCTION: Final = r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}"
PERIOD: Final = r"(19[7-9][0-9]|[2-9][0-9]{3})-(0[1-9]|1[0-2])"
# cursors: digits and hex of stored bytes only, so any stored id round-trips and none reaches SQL as text
HEX_KEY: Final = r"([0-9A-Fa-f]{2}){1,1024}"
USAGE_CURSOR: Final = r"[0-9]{1,16}(-([0-9A-Fa-f]{2}){1,1024})?"
INCIDENT_CURSOR: Final = r"[0-9]{1,16}-([0-9A-Fa-f]{2}){1,1024}"


def ecma(pattern: str) -> str:
    """The pattern as JSON Schema states it (ECMA-262: `$` is the end of the input, no newline)."""
    return f"^{pattern}$"


@dataclass(frozen=True)
class Whole:
    """Annotation: a string matched whole against `pattern`, with that pattern in the spec."""

    pattern: str
    what: str
    max_length: int
    description: str

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        rx = re.compile(self.pattern)

        def check(value: str) -> str:
            if rx.fullmatch(value) is None:
                raise ValueError(f"{self.what}: must match {ecma(self.pattern)}")
            return value

        return core_schema.no_info_after_validator_function(check, handler(source))

    def __get_pydantic_json_schema__(self, schema: CoreSchema, handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        return {"type": "string", "pattern": ecma(self.pattern), "maxLength": self.max_length,
                "description": self.description}  # fmt: skip


TenantId = Annotated[str, Whole(TENANT, "tenant", 63, "1-63 of [a-z0-9._-], starting alphanumeric")]
FunctionName = Annotated[str, Whole(FUNCTION, "function", 128, "1-128 of [A-Za-z0-9._-], starting alphanumeric")]
PeriodText = Annotated[str, Whole(PERIOD, "period", 7, "a calendar month in UTC, YYYY-MM, from 1970-01")]
TenantCursor = Annotated[str, Whole(HEX_KEY, "cursor", 2048, "`next_cursor` of the previous page")]
UsageCursor = Annotated[str, Whole(USAGE_CURSOR, "cursor", 2065, "`next_cursor` of the previous page")]
IncidentCursor = Annotated[str, Whole(INCIDENT_CURSOR, "cursor", 2065, "`next_cursor` of the previous page")]


def _rfc3339(value: Any) -> Any:
    if isinstance(value, str) and RFC3339.fullmatch(value) is None:
        raise ValueError("an RFC 3339 date-time with an offset, e.g. 2026-11-01T00:00:00Z")
    return value


def _supported(dt: datetime) -> datetime:
    if not MIN_MS <= to_ms(dt) <= MAX_MS:
        raise ValueError(f"outside the supported range {MIN_INSTANT} .. {MAX_INSTANT}")
    return dt


Instant = Annotated[
    AwareDatetime,
    BeforeValidator(_rfc3339),
    AfterValidator(_supported),
    Field(description=f"RFC 3339 date-time with an offset, {MIN_INSTANT} .. {MAX_INSTANT}; ms precision"),
]


# Enumerations: each a Literal, so the spec states the allowed values as an `enum`
Granularity = Literal["second", "minute", "hour", "day"]
Metric = Literal[
    "cpu_used_ms", "vcpu_alloc_ms", "mem_used_byte_ms", "mem_alloc_byte_ms", "io_read_bytes", "io_write_bytes",
    "net_rx_bytes", "net_tx_bytes",
]  # fmt: skip  # contracts.quantities' API names (a test holds them equal)
Format = Literal["json", "csv", "parquet"]
GroupBy = Literal["sandbox"]
IncidentState = Literal["open", "closed", "all"]
InvoiceStatus = Literal["draft", "final"]
