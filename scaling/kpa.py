"""Knative-KPA-style replica recommendations (docs/autoscaling.md).

Pure logic over a per-second load series (total load of a function's sandboxes, in the unit
its per-replica target is in). A decision every `tick_s`:

    stable = mean load over the last `stable_s`, panic = mean over the last `panic_s`
    desired_x = ceil(x / (target_utilization * per_replica)), clamped to
                [floor(ready / max_down_rate), ceil(max_up_rate * ready)], ready = max(1, ready)
    panic starts when desired_panic / ready >= panic_threshold and lasts until a whole stable
    window passed without such a tick; while panicking desired = max(stable, panic, the
    highest desired since the panic began) (never lowered)
    0 only after stable_s + grace_s without any load

Seconds without data count as 0 load. The history is replayed from its start each time, so
a decision depends on the data only, not on which process made it or when it restarted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt


@dataclass(frozen=True)
class KpaConfig:
    stable_s: int = 60
    panic_s: int = 6
    panic_threshold: float = 2.0
    target_utilization: float = 0.7
    max_up_rate: float = 1000.0
    max_down_rate: float = 2.0
    grace_s: int = 30
    tick_s: int = 2

    @property
    def history_s(self) -> int:
        """Seconds of load a replay needs: two stable windows plus the grace."""
        return 2 * self.stable_s + self.grace_s


DEFAULT = KpaConfig()


@dataclass(frozen=True)
class Decision:
    desired: int
    stable: float  # mean load over the stable window
    panic_load: float  # mean load over the panic window
    panicking: bool
    ready: int


class Kpa:
    def __init__(self, cfg: KpaConfig = DEFAULT) -> None:
        self.cfg = cfg
        self._last_panic_tick: int | None = None
        self._panic_max = 0

    def decide(self, t_s: int, load: npt.NDArray[np.float64], ready: int, per_replica: float) -> Decision:
        """One decision at second `t_s`; `load[i]` is the load of second t_s - len(load) + 1 + i."""
        c = self.cfg
        stable = float(load[-c.stable_s :].sum()) / c.stable_s
        panic_load = float(load[-c.panic_s :].sum()) / c.panic_s
        target = c.target_utilization * per_replica
        r = max(1, ready)
        lo, hi = math.floor(r / c.max_down_rate), math.ceil(c.max_up_rate * r)
        d_stable = min(max(math.ceil(stable / target - 1e-9), lo), hi)
        d_panic = min(max(math.ceil(panic_load / target - 1e-9), lo), hi)
        if d_panic / r >= c.panic_threshold:
            if self._last_panic_tick is None:
                self._panic_max = 0
            self._last_panic_tick = t_s
        elif self._last_panic_tick is not None and t_s - self._last_panic_tick >= c.stable_s:
            self._last_panic_tick = None  # a whole stable window without a panic tick
        panicking = self._last_panic_tick is not None
        if panicking:
            desired = max(d_stable, d_panic, self._panic_max)
            self._panic_max = desired
        else:
            desired = d_stable
        idle = not load[-(c.stable_s + c.grace_s) :].any()
        desired = 0 if idle else max(desired, 1)
        return Decision(desired, stable, panic_load, panicking, ready)


def replay(
    load: npt.NDArray[np.float64], ready: npt.NDArray[np.int64], per_replica: float, cfg: KpaConfig = DEFAULT
) -> list[Decision]:
    """Decisions every `tick_s` over a load history (per second), ending at its last second.

    The first decision is made once a whole stable window plus grace is behind it; earlier
    seconds only fill the windows.
    """
    kpa = Kpa(cfg)
    out = []
    warm = cfg.stable_s + cfg.grace_s
    n = len(load)
    first = warm + ((n - 1 - warm) % cfg.tick_s)  # so that the last tick is the last second
    for end in range(first, n, cfg.tick_s):
        window = load[max(0, end + 1 - warm) : end + 1]
        if len(window) < warm:
            window = np.concatenate([np.zeros(warm - len(window)), window])
        out.append(kpa.decide(end, window, int(ready[end]), per_replica))
    return out
