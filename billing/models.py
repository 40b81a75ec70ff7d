"""Response models: what every route returns, as the OpenAPI spec states it.

Money and quantities are decimal strings (exact; a JSON number would pass through binary
floating point in most clients), with a pattern; times are RFC 3339 `date-time` in UTC with
milliseconds; kinds, states and units are enums. Finalized invoices are served as stored, so
the invoice model describes every body ever stored, too.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema

from billing.params import Granularity, IncidentState, InvoiceStatus, Whole

DECIMAL = r"-?(0|[1-9][0-9]*)(\.[0-9]+)?"
Dec = Annotated[str, Whole(DECIMAL, "decimal", 200, "an exact decimal number, as a string")]
Money = Annotated[str, Whole(DECIMAL, "amount", 200, "an amount in the currency, as a decimal string")]
UpTo = Annotated[str, Whole(f"({DECIMAL})?", "up_to", 200, "a tier's upper bound; empty for the last, unbounded tier")]
UnitPrice = Annotated[str, Whole(f"{DECIMAL}|tiered", "unit_price", 200, "the price per unit, or `tiered`")]
# produced by billing.timeparse.format_ms only, e.g. 2026-11-27T10:00:00.123Z (kept as formatted)
Instant = Annotated[str, WithJsonSchema({"type": "string", "format": "date-time"})]


Currency = Literal["USD", "EUR", "GBP", "CNY", "JPY"]  # billing.plans.MINOR_UNITS (a test holds them equal)


PlanMetric = Literal["vcpu_alloc_ms", "cpu_used_ms", "mem_alloc_gib_ms", "io_gb", "net_gb"]  # contracts.quantities


RatingModel = Literal["per_unit", "graduated", "volume"]  # billing.plans.MODELS


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Page(Model):
    next_cursor: str | None = Field(description="pass as `cursor` for the next page; null on the last page")


class PlanRef(Model):
    id: str
    version: int = Field(ge=1)


class TierPart(Model):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    from_: Dec = Field(alias="from")
    to: UpTo
    quantity: Dec
    unit_price: Dec
    amount: Dec = Field(description="exact, before the line is rounded")


class Line(Model):
    metric: PlanMetric
    description: str
    unit: str
    quantity: Dec
    free: Dec
    model: RatingModel
    unit_price: UnitPrice
    tiers: list[TierPart]
    exact_amount: Dec
    amount: Money = Field(description="rounded once to the currency's minor unit, ROUND_HALF_EVEN")


AdjustmentKind = Literal["late_usage", "minimum_commitment"]


class Adjustment(Model):
    kind: AdjustmentKind
    label: str
    amount: Money
    period: str | None = Field(None, description="late_usage: the finalized month the usage belongs to")
    quantities: dict[str, Dec] | None = Field(None, description="late_usage: the usage booked now, per plan metric")


class Invoice(Model):
    tenant: str
    period: str = Field(description="YYYY-MM")
    period_start: Instant
    period_end: Instant
    status: InvoiceStatus
    plan: PlanRef
    currency: Currency
    quantities: dict[str, Dec]
    lines: list[Line]
    subtotal: Money
    adjustments: list[Adjustment]
    total: Money
    rounding: str
    finalized_at: Instant | None = Field(None, description="final invoices: when the finalize job froze it")
    generated_at: Instant | None = Field(None, description="drafts: when this draft was computed")
    finalizes_after: Instant | None = Field(None, description="drafts: the grace period's end")


class InvoiceSummary(Model):
    period: str
    status: InvoiceStatus
    currency: Currency
    total: Money
    finalized_at: Instant | None


class InvoicePage(Page):
    tenant: str
    invoices: list[InvoiceSummary] = Field(description="newest month first")


class Cost(Model):
    tenant: str
    from_: Instant = Field(alias="from")
    to: Instant
    currency: Currency
    plan: PlanRef
    lines: list[Line]
    total: Money
    rounding: str
    note: str


class MetricValues(Model):
    """Only the requested metrics are present. ms metrics may have 3 decimals; the rest are integers."""

    cpu_used_ms: Dec | None = None
    vcpu_alloc_ms: Dec | None = None
    mem_used_byte_ms: Dec | None = None
    mem_alloc_byte_ms: Dec | None = None
    io_read_bytes: Dec | None = None
    io_write_bytes: Dec | None = None
    net_rx_bytes: Dec | None = None
    net_tx_bytes: Dec | None = None


class UsagePoint(MetricValues):
    start: Instant = Field(description="the bucket's start; an interval counts in the bucket of its last ms")
    sandbox_id: str | None = Field(None, description="with group_by=sandbox")


class UsagePage(Page):
    tenant: str
    from_: Instant = Field(alias="from")
    to: Instant
    granularity: Granularity
    totals: MetricValues = Field(description="over the whole range, not only this page")
    series: list[UsagePoint]


class TenantPage(Page):
    tenants: list[str] = Field(description="tenants with usage in the range, in byte order")


IncidentKind = Literal["qemu_hang", "io_stall", "host_disk_stall"]  # contracts.names.INCIDENT_KINDS


class Incident(Model):
    incident_id: str
    kind: IncidentKind
    node: str
    sandbox_id: str = Field(description="empty for a host disk")
    tenant: str = Field(description="the sandbox's tenant; empty for a host disk, which belongs to no tenant")
    disk: str = Field(description="the host disk's name for a host_disk_stall; empty for a sandbox's incident")
    opened: Instant
    closed: Instant | None
    state: IncidentState = Field(description="open or closed")
    evidence: dict[str, Any]


class IncidentPage(Page):
    state: IncidentState
    tenant: str | None = None
    incidents: list[Incident] = Field(description="newest first")


LoadUnit = Literal["cores", "requests"]


class Load(Model):
    total: float = Field(allow_inf_nan=False)
    stable: float = Field(allow_inf_nan=False)
    panic: float = Field(allow_inf_nan=False)


class Window(Model):
    stable_s: int
    panic_s: int
    grace_s: int


class Recommendation(Model):
    tenant: str
    function: str
    desired_replicas: int = Field(ge=0)
    panic: bool
    load: Load
    ready_replicas: int = Field(ge=0)
    per_replica_target: float = Field(allow_inf_nan=False)
    unit: LoadUnit
    timestamp: Instant
    window: Window
