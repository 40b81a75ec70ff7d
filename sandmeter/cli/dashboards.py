"""`sandmeter dashboards`: Grafana dashboards and provisioning, Prometheus config and rules, and
the Alertmanager config."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from sandmeter.cli.common import SETTINGS_ERROR, CliError, Subparsers


def add(sub: Subparsers) -> None:
    p = sub.add_parser(
        "dashboards", help="write Grafana dashboards and provisioning, Prometheus config and rules, Alertmanager config"
    )
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--plans", type=Path, default=Path("plans"), help="price plans for the list-price cost panels")
    p.add_argument(
        "--database", default="sandmeter",
        help="the configured ClickHouse database the panels read (its _raw sibling too; docs/deployment.md)",
    )  # fmt: skip
    p.add_argument(
        "--alert-webhook-url",
        help="where Alertmanager posts every notification (default: a placeholder to replace, see docs/operations.md)",
    )
    p.set_defaults(fn=run)


def run(a: argparse.Namespace) -> int:
    from billing import PlanError
    from dashboards import DEFAULT_WEBHOOK_URL, write_all

    url = a.alert_webhook_url or DEFAULT_WEBHOOK_URL
    if not re.fullmatch(r"https?://\S+", url):
        raise CliError(SETTINGS_ERROR, f"--alert-webhook-url {url!r}: expected an http(s) URL")
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", a.database):
        raise CliError(SETTINGS_ERROR, f"--database {a.database!r}: expected a ClickHouse database name")
    try:
        written = write_all(a.out, a.plans, url, a.database)
    except PlanError as exc:
        raise CliError(SETTINGS_ERROR, f"--plans {a.plans}: {exc}") from None
    except OSError as exc:
        raise CliError(SETTINGS_ERROR, f"--out {a.out}: {exc.strerror}") from None
    for p in written:
        print(p)
    return 0
