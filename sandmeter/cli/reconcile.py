"""`sandmeter reconcile`: recompute rollups that disagree with the intervals (SANDMETER_PROCESSOR_CLICKHOUSE_*)."""

from __future__ import annotations

import argparse

from contracts.clock import wall_ms
from contracts.settings import Part
from sandmeter.cli.common import Subparsers, require_clickhouse, service, settings


def _settings_class() -> type[Part]:
    from pipeline import ProcessorSettings

    return ProcessorSettings


def add(sub: Subparsers) -> None:
    help_ = (
        "recompute the minute and hour rollups that disagree with the usage intervals, e.g. after a "
        "ClickHouse replica was down (SANDMETER_PROCESSOR_CLICKHOUSE_*)"
    )
    p = service(sub, "reconcile", help_, run, _settings_class)
    p.add_argument("--hours", type=float, default=24.0, help="how far back to check (default 24)")


def run(a: argparse.Namespace) -> int:
    from pipeline import ProcessorSettings, reconcile_rollups

    s = settings(ProcessorSettings)
    require_clickhouse(s)
    now = wall_ms()
    stale = reconcile_rollups(s.clickhouse(), now - int(a.hours * 3_600_000), now)
    detail = "; ".join(f"{t or '(no tenant)'} {lo}..{hi}" for t, (lo, hi) in sorted(stale.items()))
    print(
        f"checked the last {a.hours:g} h: {len(stale)} tenant(s) with stale rollups"
        + (f", recomputed: {detail}" * bool(detail))
    )
    return 0
