"""Parameter types, decimal strings and exports, as properties over generated inputs (no server)."""

from __future__ import annotations

import io
import json
import re
from datetime import UTC, datetime, timedelta, timezone
from decimal import Context, Decimal, localcontext
from typing import Any, get_args

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import assume, example, given
from hypothesis import strategies as st
from pydantic import TypeAdapter, ValidationError

from billing.exports import decimal_array, invoice_rows, to_csv, to_parquet
from billing.invoices import Period
from billing.keys import TENANT, BadKey, create_key
from billing.models import DECIMAL, Currency, IncidentKind, PlanMetric, RatingModel
from billing.params import MAX_MS, FunctionName, Instant, Metric, PeriodText, TenantId, UsageCursor
from billing.plans import MINOR_UNITS, MODELS, PLAN_METRICS
from billing.rating import fmt
from billing.timeparse import format_ms, to_ms
from billing.usage import METRICS, Page, to_api_unit
from contracts.names import INCIDENT_KINDS

INSTANT: TypeAdapter[datetime] = TypeAdapter(Instant)
TENANT_ID: TypeAdapter[str] = TypeAdapter(TenantId)
PERIOD: TypeAdapter[str] = TypeAdapter(PeriodText)
DEC = re.compile(DECIMAL)
offsets = st.integers(-(24 * 60 - 1), 24 * 60 - 1).map(lambda m: timezone(timedelta(minutes=m)))


def rfc3339(dt: datetime) -> str:
    off = dt.utcoffset() or timedelta(0)
    sign, minutes = ("-" if off < timedelta(0) else "+"), abs(int(off.total_seconds())) // 60
    return dt.strftime("%Y-%m-%dT%H:%M:%S") + f".{dt.microsecond:06d}{sign}{minutes // 60:02d}:{minutes % 60:02d}"


@given(st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=offsets))
@example(datetime(9999, 12, 30, 23, 59, 59, tzinfo=timezone(timedelta(hours=-14))))
def test_any_date_time_is_read_to_the_ms_or_refused_as_out_of_range(dt: datetime) -> None:
    """Never a crash (year 10000, year 0): inside 1970..9999-01-01 the exact instant, floored to
    the ms, else a validation error."""
    text = rfc3339(dt)
    exact = (dt.replace(tzinfo=None) - datetime(1970, 1, 1) - (dt.utcoffset() or timedelta(0))) // timedelta(
        milliseconds=1
    )
    if 0 <= exact <= MAX_MS:
        assert to_ms(INSTANT.validate_python(text)) == exact
        assert (
            format_ms(exact)
            == (datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=exact)).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3]
            + "Z"
        )
    else:
        with pytest.raises(ValidationError):
            INSTANT.validate_python(text)


@given(st.text())
@example("2026-11-01T00:00:00Z\n")
@example("1700000000")
@example("2026-11-01 00:00:00Z")
def test_anything_else_is_a_validation_error_never_another_exception(text: str) -> None:
    try:
        ms = to_ms(INSTANT.validate_python(text))
    except ValidationError:
        return
    assert 0 <= ms <= MAX_MS


@given(st.text(max_size=80))
@example("acme\n")
@example("tenant-a\n")
@example("Bad Tenant'; DROP")
def test_patterns_match_the_whole_value(text: str) -> None:
    for adapter, rx in (
        (TENANT_ID, r"[a-z0-9][a-z0-9._-]{0,62}"),
        (PERIOD, r"(19[7-9][0-9]|[2-9][0-9]{3})-(0[1-9]|1[0-2])"),
        (TypeAdapter(FunctionName), r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}"),
        (TypeAdapter(UsageCursor), r"[0-9]{1,16}(-([0-9A-Fa-f]{2}){1,1024})?"),
    ):
        ok = re.fullmatch(rx, text) is not None
        try:
            adapter.validate_python(text)
            accepted = True
        except ValidationError:
            accepted = False
        assert accepted == ok, (rx, text)
        assert not (accepted and ("\n" in text or '"' in text))  # nothing that could break a header


@given(st.from_regex(r"(19[7-9][0-9]|[2-9][0-9]{3})-(0[1-9]|1[0-2])", fullmatch=True))
def test_every_valid_period_has_bounds(text: str) -> None:
    p = Period.parse(PERIOD.validate_python(text))
    assert p.start_ms < p.end_ms and str(p) == text and p.next().prev() == p


@given(st.decimals(allow_nan=False, allow_infinity=False))
def test_every_decimal_is_written_as_the_spec_pattern_says(d: Decimal) -> None:
    assume(abs(d.adjusted()) < 100)
    text = fmt(d)
    assert DEC.fullmatch(text), text
    assert Decimal(text) == d


@given(st.integers(0, 2**128), st.sampled_from(sorted(METRICS)))
def test_usage_values_are_exact_decimal_strings(total: int, metric: str) -> None:
    [text] = to_api_unit([str(total)], metric)
    with localcontext(Context(prec=200)):
        assert DEC.fullmatch(text) and Decimal(text) == Decimal(total) / METRICS[metric][1]
    assert not text.endswith(".") and (text.count(".") == 0 or not text.endswith("0"))


@given(st.lists(st.one_of(st.none(), st.decimals(allow_nan=False, allow_infinity=False)), max_size=20))
def test_decimal_columns_hold_their_values_exactly(values: list[Decimal | None]) -> None:
    """Whatever the scale and size (money, 60-digit quantities), Parquet gives back the same decimals."""
    assume(all(v is None or (abs(v.adjusted()) < 30 and int(v.as_tuple().exponent) >= -40) for v in values))
    table = pa.table({"v": decimal_array(values)})
    back = pq.read_table(io.BytesIO(to_parquet(table))).column("v").to_pylist()
    assert back == values


def test_the_enums_are_the_definitions() -> None:
    assert set(get_args(Metric)) == set(METRICS)
    assert set(get_args(Currency)) == set(MINOR_UNITS)
    assert set(get_args(PlanMetric)) == set(PLAN_METRICS)
    assert set(get_args(RatingModel)) == set(MODELS)
    assert set(get_args(IncidentKind)) == set(INCIDENT_KINDS)


def test_an_empty_csv_has_its_header() -> None:
    assert to_csv(["a", "b"], []) == b"a,b\n"


def test_invoice_rows_come_from_the_document() -> None:
    doc: dict[str, Any] = {
        "period": "2026-11", "currency": "USD", "total": "5.00",
        "lines": [{"metric": "io_gb", "unit": "GB", "model": "per_unit", "quantity": "1", "unit_price": "0.02",
                   "amount": "0.02"}],
        "adjustments": [{"kind": "minimum_commitment", "amount": "4.98"}],
    }  # fmt: skip
    rows = invoice_rows(doc)
    assert [r["kind"] for r in rows] == ["usage", "minimum_commitment", "total"]
    assert rows[-1]["amount"] == "5.00" and rows[0]["unit_price"] == "0.02"


@pytest.mark.parametrize("tenant", ["Bad Tenant'; DROP", "tenant-a\n", "", "-lead", "x" * 64, "ACME"])
def test_keys_are_only_created_for_valid_tenant_ids(tenant: str) -> None:
    with pytest.raises(BadKey):
        create_key(None, TENANT, tenant)  # refused before any query


@given(
    st.lists(
        st.tuples(
            st.integers(0, MAX_MS), st.text(), st.from_regex(r"(0|[1-9][0-9]{0,30})(\.[0-9]{1,3})?", fullmatch=True)
        ),
        max_size=30,
    ),
    st.booleans(),
)
@example([(0, '"}\\\n%s\u2028', "0")], True)
def test_the_series_json_is_what_json_dumps_would_write(rows: list[tuple[int, str, str]], grouped: bool) -> None:
    """Whatever the sandbox ids hold (quotes, backslashes, %s, line separators): the same JSON."""
    page = Page(
        buckets=[b for b, _, _ in rows], sandbox_hex=[s.encode().hex() for _, s, _ in rows] if grouped else None,
        sandboxes=[s for _, s, _ in rows] if grouped else None,
        values={"cpu_used_ms": [v for _, _, v in rows], "net_tx_bytes": [v for _, _, v in rows]}, totals={},
        more=False,
    )  # fmt: skip
    expect = [
        {"start": format_ms(b), **({"sandbox_id": s} if grouped else {}), "cpu_used_ms": v, "net_tx_bytes": v}
        for b, s, v in rows
    ]
    assert json.loads(page.series_json()) == expect
