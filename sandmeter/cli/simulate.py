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
    p.add_argument("--sandboxes", type=int, default=20, help="long-lived sandboxes, spread over the nodes")
    p.add_argument("--tenants", type=int, default=3)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--seconds", type=float, default=0, help="stop after this long (0: until Ctrl-C or SIGTERM)")
    p.add_argument("--churn-per-min", type=float, default=6.0, help="long-lived sandboxes replaced per minute")
    p.add_argument("--short-per-min", type=float, default=0.0, help="short-lived sandboxes started per minute")
    p.add_argument(
        "--lifetime", default="uniform:20:500", metavar="DIST",
        help="short-lived sandboxes' lifetimes in ms: fixed:N, uniform:A:B, loguniform:A:B or exp:MEAN[:MIN]",
    )  # fmt: skip
    p.add_argument("--restart-per-min", type=float, default=1.0, help="VM restarts (counter resets) per minute")
    p.add_argument("--restart-ms", type=int, default=3000, help="a VM restart's downtime")
    p.add_argument(
        "--net-teardown-ms", type=int, default=100, help="how long a pod's veth outlives its sandbox directory"
    )
    p.add_argument("--start-when", type=Path, help="create the sandboxes once this file exists")
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
    from collectors.sim import Dist, FaultSpec, FleetSpec, Simulator

    try:
        faults = tuple(FaultSpec.parse(f) for f in a.fault)
        lifetime = Dist.parse(a.lifetime)
    except ValueError as exc:
        print(f"sandmeter simulate: {exc}", file=sys.stderr)
        return 2
    spec = FleetSpec(
        nodes=a.nodes, sandboxes=a.sandboxes, tenants=a.tenants, seed=a.seed, faults=faults, kata_detail=a.kata_detail,
        churn_per_min=a.churn_per_min, short_per_min=a.short_per_min, lifetime=lifetime,
        reset_per_min=a.restart_per_min, restart_ms=a.restart_ms, net_teardown_ms=a.net_teardown_ms,
    )  # fmt: skip
    # each start and stop is stamped just before its file operation: another thread (a kata-monitor
    # request) taking the GIL in between widens the truth's window; keep that short
    sys.setswitchinterval(0.0005)
    sim = Simulator(a.root, spec)
    stop = stop_on_signals()
    print(f"simulating {a.nodes} nodes under {a.root}; node roots and URLs in {a.root / 'fleet.json'}", flush=True)
    while a.start_when and not a.start_when.exists():  # e.g. until collectors watch the nodes' directories
        if stop.wait(0.05):
            sim.stop()
            return 0
    sim.start()
    deadline = time.monotonic() + a.seconds if a.seconds else None
    while not stop.wait(1.0):
        if deadline and time.monotonic() >= deadline:
            break
    sim.drain()
    sim.stop()
    print(f"ground truth written to {a.root / 'ground-truth.json'}")
    return 0
