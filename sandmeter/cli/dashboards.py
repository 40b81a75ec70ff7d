"""`sandmeter dashboards`: Grafana dashboards and provisioning, Prometheus config and rules."""

from __future__ import annotations

import argparse
from pathlib import Path

from sandmeter.cli.common import Subparsers


def add(sub: Subparsers) -> None:
    p = sub.add_parser("dashboards", help="write Grafana dashboards and provisioning, Prometheus config and rules")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--plans", type=Path, default=Path("plans"), help="price plans for the list-price cost panels")
    p.set_defaults(fn=run)


def run(a: argparse.Namespace) -> int:
    from dashboards import write_all

    for p in write_all(a.out, a.plans):
        print(p)
    return 0
