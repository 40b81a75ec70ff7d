"""`sandmeter dashboards`: Grafana dashboards and provisioning, Prometheus config and rules."""

from __future__ import annotations

import argparse
from pathlib import Path

from sandmeter.cli.common import SETTINGS_ERROR, CliError, Subparsers


def add(sub: Subparsers) -> None:
    p = sub.add_parser("dashboards", help="write Grafana dashboards and provisioning, Prometheus config and rules")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--plans", type=Path, default=Path("plans"), help="price plans for the list-price cost panels")
    p.set_defaults(fn=run)


def run(a: argparse.Namespace) -> int:
    from billing import PlanError
    from dashboards import write_all

    try:
        written = write_all(a.out, a.plans)
    except PlanError as exc:
        raise CliError(SETTINGS_ERROR, f"--plans {a.plans}: {exc}") from None
    except OSError as exc:
        raise CliError(SETTINGS_ERROR, f"--out {a.out}: {exc.strerror}") from None
    for p in written:
        print(p)
    return 0
