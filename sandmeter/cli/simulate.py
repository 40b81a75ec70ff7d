"""`sandmeter simulate`: a simulated fleet of Kata nodes on loopback, for tests and demos."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from sandmeter.cli.common import Subparsers, stop_on_signals


def add(sub: Subparsers) -> None:
    p = sub.add_parser("simulate", help="run a simulated fleet of Kata nodes")
    p.add_argument("--root", type=Path, required=True, help="directory for the nodes' trees")
    p.add_argument("--nodes", type=int, default=3)
    p.add_argument("--sandboxes", type=int, default=20)
    p.add_argument("--tenants", type=int, default=3)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--seconds", type=float, default=0, help="stop after this long (0: until Ctrl-C)")
    p.add_argument(
        "--kata-detail", action="store_true", help="export every kata-monitor family (~300 series per sandbox)"
    )
    p.add_argument(
        "--fault",
        action="append",
        default=[],
        metavar="KIND:AT_S[:DURATION_S[:NODE]]",
        help="inject qemu_hang or io_stall into a random sandbox of node NODE (repeatable)",
    )
    p.set_defaults(fn=run)


def run(a: argparse.Namespace) -> int:
    from collectors.sim import FaultSpec, FleetSpec, Simulator

    try:
        faults = tuple(FaultSpec.parse(f) for f in a.fault)
    except ValueError as exc:
        print(f"sandmeter simulate: --fault {exc}", file=sys.stderr)
        return 2
    spec = FleetSpec(
        nodes=a.nodes, sandboxes=a.sandboxes, tenants=a.tenants, seed=a.seed, faults=faults, kata_detail=a.kata_detail
    )
    sim = Simulator(a.root, spec)
    sim.start()
    print(f"simulating {a.nodes} nodes under {a.root}; node roots and URLs in {a.root / 'fleet.json'}", flush=True)
    stop = stop_on_signals()
    deadline = time.monotonic() + a.seconds if a.seconds else None
    while not stop.wait(1.0):
        if deadline and time.monotonic() >= deadline:
            break
    sim.drain()
    sim.stop()
    print(f"ground truth written to {a.root / 'ground-truth.json'}")
    return 0
