"""What a simulated fleet is asked to do: its size, churn, lifetimes, restarts and faults."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any, Literal


@dataclass(frozen=True)
class Dist:
    """A distribution of durations in ms, written `fixed:N`, `uniform:A:B`, `loguniform:A:B`
    or `exp:MEAN[:MIN]` (exponential, never below MIN)."""

    kind: Literal["fixed", "uniform", "loguniform", "exp"]
    a: float
    b: float = 0.0

    @classmethod
    def parse(cls, text: str) -> Dist:
        kind, *nums = text.split(":")
        try:
            vals = [float(x) for x in nums]
        except ValueError:
            vals = []
        arity = {"fixed": (1,), "uniform": (2,), "loguniform": (2,), "exp": (1, 2)}
        ok = kind in arity and len(vals) in arity[kind] and all(v >= 0 for v in vals)
        if ok and kind in ("uniform", "loguniform"):
            ok = vals[0] <= vals[1] and (kind == "uniform" or vals[0] > 0)
        if not ok:
            raise ValueError(
                f"{text!r}: expected fixed:N, uniform:A:B, loguniform:A:B (0 < A) or exp:MEAN[:MIN], in ms, A <= B"
            )
        return cls(kind, vals[0], vals[1] if len(vals) > 1 else 0.0)  # type: ignore[arg-type]

    def sample(self, rng: random.Random) -> int:
        if self.kind == "fixed":
            return round(self.a)
        if self.kind == "uniform":
            return round(rng.uniform(self.a, self.b))
        if self.kind == "loguniform":
            return round(math.exp(rng.uniform(math.log(self.a), math.log(self.b))))
        return round(max(self.b, rng.expovariate(1.0 / self.a))) if self.a else round(self.b)

    def __str__(self) -> str:
        return {"fixed": f"fixed:{self.a:g}", "exp": f"exp:{self.a:g}:{self.b:g}"}.get(
            self.kind, f"{self.kind}:{self.a:g}:{self.b:g}"
        )


FaultKind = Literal["qemu_hang", "io_stall"]
FAULT_KINDS: tuple[FaultKind, ...] = ("qemu_hang", "io_stall")


@dataclass(frozen=True)
class FaultSpec:
    """A fault injected into one live sandbox of `node` (an index), `at_s` after the start."""

    kind: FaultKind
    at_s: float
    duration_s: float | None = None  # None: until the end of the run
    node: int = 0

    @classmethod
    def parse(cls, text: str) -> FaultSpec:
        """`KIND:AT_S[:DURATION_S[:NODE]]`, e.g. `qemu_hang:30:120:1`; an empty duration runs to the end."""
        parts = text.split(":")
        if not 2 <= len(parts) <= 4 or parts[0] not in FAULT_KINDS:
            raise ValueError(f"{text!r}: expected KIND:AT_S[:DURATION_S[:NODE]] with KIND one of {FAULT_KINDS}")
        kind: FaultKind = "qemu_hang" if parts[0] == "qemu_hang" else "io_stall"
        dur = float(parts[2]) if len(parts) > 2 and parts[2] else None
        return cls(kind, float(parts[1]), dur, int(parts[3]) if len(parts) > 3 else 0)


@dataclass
class FleetSpec:
    nodes: int = 3
    sandboxes: int = 20  # initial long-lived ones, spread over the nodes
    tenants: int = 3
    churn_per_min: float = 6.0  # long-lived sandbox stops (each replaced by a new one) per minute
    short_per_min: float = 0.0  # short-lived sandboxes started per minute, over all nodes
    lifetime: Dist = Dist("uniform", 20, 500)  # of the short-lived ones
    reset_per_min: float = 1.0  # VM restarts (counter resets) per minute, of long-lived sandboxes
    restart_ms: int = 3000  # a restart's downtime; longer than a scrape interval keeps the truth observable
    # CNI DEL removes the pod's veth (and the CNI result) this long after the sandbox directory
    # went: containerd tears the network down after the shim has stopped and deleted the sandbox
    net_teardown_ms: int = 100
    seed: int = 7
    faults: tuple[FaultSpec, ...] = ()
    kata_detail: bool = False  # kata-monitor exports every family (~300 series per sandbox), as a real one does

    def describe(self) -> dict[str, Any]:
        return {
            "nodes": self.nodes,
            "sandboxes": self.sandboxes,
            "churn_per_min": self.churn_per_min,
            "short_per_min": self.short_per_min,
            "lifetime": str(self.lifetime),
            "reset_per_min": self.reset_per_min,
            "restart_ms": self.restart_ms,
            "net_teardown_ms": self.net_teardown_ms,
        }
