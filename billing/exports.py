"""CSV and Parquet exports of usage series and invoices.

CSV always has its header row, even with no data rows. Parquet columns carry real types:
times as UTC millisecond timestamps, quantities and money as decimals (a 38-digit decimal
holds any sum of 64-bit counters; byte-ms over a month overflows a 64-bit integer), text as
strings. Invoice rows are built here from the invoice document, not in the route.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from decimal import Decimal
from typing import Any, Final

import pyarrow as pa
import pyarrow.parquet as pq

INVOICE_COLUMNS: Final = ("kind", "metric", "period", "unit", "model", "quantity", "unit_price", "amount", "currency")
INVOICE_DECIMALS: Final = ("quantity", "unit_price", "amount")
MEDIA: Final = {"csv": "text/csv; charset=utf-8", "parquet": "application/vnd.apache.parquet"}


def to_csv(columns: Sequence[str], rows: list[dict[str, Any]]) -> bytes:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(columns), lineterminator="\n", extrasaction="ignore")
    w.writeheader()
    w.writerows({k: "" if v is None else v for k, v in r.items()} for r in rows)
    return buf.getvalue().encode()


def to_parquet(table: pa.Table) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


def decimal_array(values: Sequence[Decimal | None]) -> pa.Array:
    """Decimals at the scale the column needs; 256-bit when 38 digits do not hold them."""
    shapes = [(len(t.digits), int(t.exponent)) for t in (v.as_tuple() for v in values if v is not None)]
    scale = max((max(0, -e) for _, e in shapes), default=0)
    whole = max((max(n + e, 1) for n, e in shapes), default=1)  # digits before the point
    kind = pa.decimal128(38, scale) if whole + scale <= 38 else pa.decimal256(76, scale)
    return pa.array(values, type=kind)


def usage_parquet(ms: list[int], sandboxes: list[str] | None, metrics: dict[str, tuple[list[str], int]]) -> bytes:
    """`metrics`: name -> (values as exact decimal strings, decimal places of the API unit)."""
    cols: dict[str, pa.Array] = {"start": pa.array(ms, type=pa.timestamp("ms", tz="UTC"))}
    if sandboxes is not None:
        cols["sandbox_id"] = pa.array(sandboxes, type=pa.string())
    for name, (values, places) in metrics.items():
        cols[name] = pa.array([Decimal(v) for v in values], type=pa.decimal128(38, places))
    return to_parquet(pa.table(cols))


def invoice_rows(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per usage line, per adjustment, and the total, in the invoice's currency."""
    cur = doc["currency"]
    rows = [
        {"kind": "usage", "metric": ln["metric"], "period": doc["period"], "unit": ln["unit"], "model": ln["model"],
         "quantity": ln["quantity"], "unit_price": None if ln["unit_price"] == "tiered" else ln["unit_price"],
         "amount": ln["amount"], "currency": cur}
        for ln in doc["lines"]
    ]  # fmt: skip
    rows += [
        {"kind": a["kind"], "metric": None, "period": a.get("period", doc["period"]), "unit": None, "model": None,
         "quantity": None, "unit_price": None, "amount": a["amount"], "currency": cur}
        for a in doc["adjustments"]
    ]  # fmt: skip
    rows.append({"kind": "total", "metric": None, "period": doc["period"], "unit": None, "model": None,
                 "quantity": None, "unit_price": None, "amount": doc["total"], "currency": cur})  # fmt: skip
    return rows


def invoice_csv(doc: dict[str, Any]) -> bytes:
    return to_csv(INVOICE_COLUMNS, invoice_rows(doc))


def invoice_parquet(doc: dict[str, Any]) -> bytes:
    rows = invoice_rows(doc)
    cols: dict[str, pa.Array] = {}
    for c in INVOICE_COLUMNS:
        vals = [r[c] for r in rows]
        cols[c] = (
            decimal_array([None if v is None else Decimal(v) for v in vals])
            if c in INVOICE_DECIMALS
            else pa.array(vals, type=pa.string())
        )
    return to_parquet(pa.table(cols))
