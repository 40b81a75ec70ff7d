"""Plan files and rating: every model, allowances, rounding once per line, errors with file:line."""

from __future__ import annotations

import shutil
from decimal import Decimal
from pathlib import Path

import pytest

from billing.plans import PlanError, load_book, load_plan
from billing.rating import quantities, rate, rate_line

PLANS = Path(__file__).resolve().parents[1] / "fixtures" / "plans"
JAN = 1_798_761_600_000  # 2027-01-01T00:00:00Z


def test_book_assigns_plans_and_picks_the_version_in_effect() -> None:
    book = load_book(PLANS)
    assert book.plan_for("tenant-a", JAN - 1).version == 1
    assert book.plan_for("tenant-a", JAN).version == 2
    assert book.plan_for("tenant-c", JAN).id == "enterprise"


def test_graduated_volume_and_per_unit_lines_by_hand() -> None:
    plan = load_book(PLANS).plan_for("tenant-a", 0)
    q = {"vcpu_alloc_ms": Decimal("1500000"), "cpu_used_ms": Decimal("123456.789"),
         "mem_alloc_gib_ms": Decimal("2000000"), "io_gb": Decimal("0.5"), "net_gb": Decimal("0.0000001")}  # fmt: skip
    lines, subtotal = rate(plan, q)
    by = {ln["metric"]: ln for ln in lines}
    # graduated after 60,000 free: 1,000,000 at 0.000002 = 2.00, then 440,000 at 0.0000015 = 0.66
    assert by["vcpu_alloc_ms"]["exact_amount"] == "2.6600000" and by["vcpu_alloc_ms"]["amount"] == "2.66"
    assert [t["quantity"] for t in by["vcpu_alloc_ms"]["tiers"]] == ["1000000", "440000"]
    # per unit: 123456.789 x 0.000001 = 0.123456789 -> 0.12
    assert by["cpu_used_ms"]["amount"] == "0.12"
    # volume: all 2,000,000 at the second tier's 0.00000025 = 0.50
    assert by["mem_alloc_gib_ms"]["amount"] == "0.50" and len(by["mem_alloc_gib_ms"]["tiers"]) == 1
    assert by["io_gb"]["amount"] == "0.01"  # 0.5 x 0.02 = 0.010
    assert by["net_gb"]["amount"] == "0.00"  # 9e-9 rounds to nothing
    assert subtotal == Decimal("3.29")  # the sum of the rounded lines


def test_each_line_rounds_once_half_even() -> None:
    plan = load_book(PLANS).plan_for("tenant-a", 0)
    cpu = next(ln for ln in plan.lines if ln.metric == "cpu_used_ms")
    assert rate_line(cpu, Decimal("5000"), plan.minor_unit)["amount"] == "0.00"  # 0.005 -> 0.00 (to even)
    assert rate_line(cpu, Decimal("15000"), plan.minor_unit)["amount"] == "0.02"  # 0.015 -> 0.02 (to even)
    assert rate_line(cpu, Decimal("15001"), plan.minor_unit)["amount"] == "0.02"


def test_quantities_convert_exactly() -> None:
    q = quantities({"cpu_used_us": 1, "vcpu_alloc_mcpu_ms": 27_550, "mem_alloc_byte_ms": 1 << 29,
                    "io_read_bytes": 1, "io_write_bytes": 0, "net_rx_bytes": 5, "net_tx_bytes": 5})  # fmt: skip
    assert q == {"cpu_used_ms": Decimal("0.001"), "vcpu_alloc_ms": Decimal("27.55"), "mem_alloc_gib_ms": Decimal("0.5"),
                 "io_gb": Decimal("1e-9"), "net_gb": Decimal("1e-8")}  # fmt: skip


@pytest.mark.parametrize(
    ("mutate", "line", "field"),
    [
        (lambda s: s.replace('price = "0.0000010"', "price = 0.000001"), 20, "lines[1].price"),
        (lambda s: s.replace('model = "volume"', 'model = "stairs"'), 24, "lines[2].model"),
        (
            lambda s: s.replace('{ up_to = "1000000", price = "0.0000020" }', '{ price = "0.0000020" }'),
            13,
            "lines[0].tiers[0].up_to",
        ),
        (lambda s: s.replace('metric = "io_gb"', 'metric = "disk"'), 31, "lines[3].metric"),
        (lambda s: s.replace('currency = "USD"', 'currency = "XYZ"'), 5, "currency"),
        (lambda s: s.replace("version = 1", "version = one"), 3, "syntax"),
    ],
)
def test_a_bad_plan_file_names_its_file_line_and_field(tmp_path: Path, mutate: object, line: int, field: str) -> None:
    src = (PLANS / "standard-v1.toml").read_text()
    bad = tmp_path / "bad.toml"
    bad.write_text(mutate(src))  # type: ignore[operator]
    with pytest.raises(PlanError) as e:
        load_plan(bad)
    assert (e.value.line, e.value.field) == (line, field), str(e.value)
    assert str(e.value).startswith(f"{bad}:{line}: {field}:")


def test_assignments_must_name_existing_plans(tmp_path: Path) -> None:
    shutil.copytree(PLANS, tmp_path / "p")
    (tmp_path / "p" / "assignments.toml").write_text('default = "standard"\n[tenants]\n"t1" = "gold"\n')
    with pytest.raises(PlanError, match=r"assignments.toml:3: tenants.t1: no plan 'gold'"):
        load_book(tmp_path / "p")
