"""`sandmeter demo`: the whole pipeline on a local stack, then per-tenant usage."""

from __future__ import annotations

import argparse
from pathlib import Path

from sandmeter.cli.common import Subparsers


def add(sub: Subparsers) -> None:
    p = sub.add_parser("demo", help="run the whole pipeline on a local stack and print per-tenant usage")
    p.add_argument("--seconds", type=float, default=60)
    p.add_argument("--nodes", type=int, default=3)
    p.add_argument("--sandboxes", type=int, default=20)
    p.add_argument("--tenants", type=int, default=3)
    p.add_argument("--out", type=Path, default=Path("out"))
    p.set_defaults(fn=run)


def run(a: argparse.Namespace) -> int:
    from sandmeter.demo import main

    return main(a.seconds, a.nodes, a.sandboxes, a.tenants, a.out)
