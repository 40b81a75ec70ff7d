"""`sandmeter invoices finalize`: the scheduled job that freezes invoices (billing/finalize.py)."""

from __future__ import annotations

import argparse

from contracts.settings import Part
from sandmeter.cli.common import Subparsers, apply_log_level, require_clickhouse, service, settings


def _settings_class() -> type[Part]:
    from billing import ApiSettings

    return ApiSettings


def add(sub: Subparsers) -> None:
    inv = sub.add_parser("invoices", help="invoice jobs (SANDMETER_API_*)").add_subparsers(
        dest="inv_cmd", required=True
    )
    fin = service(
        inv, "finalize", "finalize every invoice whose grace period is over (idempotent; schedule it hourly)", run,
        _settings_class,
    )  # fmt: skip
    fin.add_argument("--tenant", default=None, help="only this tenant")
    fin.add_argument("--now", default=None, help="finalize as of this RFC 3339 time (default: the clock)")


def run(a: argparse.Namespace) -> int:
    from billing import ApiSettings, finalize_job

    s = settings(ApiSettings)
    apply_log_level(s, a.verbose)
    require_clickhouse(s)
    return finalize_job(s, s.clickhouse(), a.tenant, a.now, bill=s.billing_clickhouse())
