"""The stateful half of value validation: counter samples that neither usage nor a reset explains.

It runs inside the accountant over a flush's accountable samples, before they touch the series
state (the stateless half, per batch: NaN, negatives, ranges, times, is `validate.py`). A
counter sample is compared with the last accepted sample of its series (from the state or
earlier in the flush) and rejected when

- it rose faster than the sandbox can move it (`too_fast`): CPU faster than its spec's cores
  plus `cpu_headroom_cores` (QEMU and virtiofsd outside the guest), or `sandbox_cpus` cores
  while its spec is unknown or unlimited; bytes faster than `bytes_per_s`;
- it fell to a value a reset cannot explain (`counter_drop`): a restarted counter begins at 0
  after the previous sample, so by now it can hold at most the same rate times the elapsed time.

Both allow `slack_ms` more, for readings taken a little after they were stamped. A rejected
sample leaves the state untouched, so the next one is compared with the last accepted one: a
spike or a glitch is skipped, and because counters telescope nothing valid is lost. A series'
first sample has nothing to compare with unless its sandbox's start is known (a counter starts
at 0 there); without one it is accepted, and billed from 0 as before.

The common case is one vectorized pass; only series holding a rejected sample, or whose times
do not rise through the flush, are walked again in order (a rejection changes what the next
sample is compared with). The order is the accountant's: series, batch, time.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from contracts import names as n
from pipeline.state import SeriesState

I64 = npt.NDArray[np.int64]
KEEP, TOO_FAST, DROP = 0, 1, 2
REASON = {TOO_FAST: n.REJECT_TOO_FAST, DROP: n.REJECT_COUNTER_DROP}


@dataclass(frozen=True)
class Limits:
    """How fast a sandbox's counters can physically move (settings: docs/operations.md)."""

    sandbox_cpus: float = 512.0  # cores of a sandbox whose spec is unknown or unlimited
    cpu_headroom_cores: float = 1.0
    bytes_per_s: float = 1e12  # IO and network counters
    slack_ms: int = 2000


@dataclass(frozen=True)
class Counters:
    """The counter samples of a flush, sorted by series and time, with what each is compared to."""

    at: I64  # index of each into the flush's columns
    key: npt.NDArray[np.uint64]
    ts: I64
    val: npt.NDArray[np.float64]
    rate: npt.NDArray[np.float64]  # units per ms the series can move
    prev_ts: I64  # -1: nothing to compare with
    prev_val: npt.NDArray[np.float64]


def _verdict(c: Counters, slack_ms: int) -> npt.NDArray[np.uint8]:
    checkable = (c.prev_ts >= 0) & (c.ts > c.prev_ts)
    room = c.rate * (c.ts - c.prev_ts + slack_ms)
    out = np.zeros(c.ts.shape[0], np.uint8)
    out[checkable & (c.val >= c.prev_val) & (c.val - c.prev_val > room)] = TOO_FAST
    out[checkable & (c.val < c.prev_val) & (c.val > room)] = DROP
    return out


def screen(c: Counters, slack_ms: int) -> npt.NDArray[np.uint8]:
    """KEEP, TOO_FAST or DROP for each of `c`'s samples (in its sorted order)."""
    why = _verdict(c, slack_ms)
    # the vectorized pass compares each sample with the one before it; where a series' times do
    # not rise through the flush (a replayed or late batch), the newest one before counts instead
    later = np.zeros(c.key.shape[0], bool)
    later[1:] = (c.key[1:] == c.key[:-1]) & (c.ts[1:] <= c.ts[:-1])
    if not why.any() and not later.any():
        return why
    for k in np.unique(c.key[(why > 0) | later]).tolist():  # per such series, never per flush sample
        ix = np.flatnonzero(c.key == np.uint64(k)).tolist()
        pts, pval = int(c.prev_ts[ix[0]]), float(c.prev_val[ix[0]])  # the state, or the start at 0
        for i in ix:
            t, v = int(c.ts[i]), float(c.val[i])
            why[i] = KEEP
            if pts >= 0 and t <= pts:
                continue  # a duplicate or late sample: the accountant counts those
            if pts >= 0:
                room = float(c.rate[i]) * (t - pts + slack_ms)
                if v >= pval and v - pval > room:
                    why[i] = TOO_FAST
                elif v < pval and v > room:
                    why[i] = DROP
            if why[i] == KEEP:
                pts, pval = t, v
    return why


def counters_of(
    key: npt.NDArray[np.uint64], bidx: I64, ts: I64, val: npt.NDArray[np.float64], is_counter: npt.NDArray[np.bool_],
    rate: npt.NDArray[np.float64], series: SeriesState, start: I64,
) -> Counters:  # fmt: skip
    """The counter samples in the order the accountant takes them (series, batch, time), each
    with the sample it is compared to: the one before it in the flush when that is newer than
    the state, else the state, else the sandbox's start at 0 (`start`, `rate`: per sample;
    start -1 when unknown)."""
    at = np.flatnonzero(is_counter)
    order = np.lexsort((ts[at], bidx[at], key[at]))
    at = at[order]
    k, t, v = key[at], ts[at], val[at]
    slot = series.lookup(k)
    st_ts, st_val = series.take_ts(slot), series.take_val(slot)
    first = np.ones(k.shape[0], bool)
    first[1:] = k[1:] != k[:-1]
    before_t, before_v = np.roll(t, 1), np.roll(v, 1)
    use_state = first | (before_t <= st_ts)
    prev_ts = np.where(use_state, st_ts, before_t)
    prev_val = np.where(use_state, st_val, before_v)
    sb_start = start[at]
    new = prev_ts < 0
    prev_ts = np.where(new, np.where((sb_start >= 0) & (sb_start < t), sb_start, -1), prev_ts)
    prev_val = np.where(new, 0.0, prev_val)
    return Counters(at, k, t, v, rate[at], prev_ts, prev_val)
