"""Per-series accounting of one flush, columnar: counter deltas and clipped gauge integrals.

The samples of a flush are sorted by (series, batch, time) and each is compared with the
series' newest sample among the batches before it (or the stored state): newer is
accounted, equal is a duplicate (a replay), older is late. That is exactly what processing
the batches one by one would do, so rows do not depend on how batches were grouped.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from pipeline.state import SeriesState

I64_MIN = np.iinfo(np.int64).min
I64_MAX = np.iinfo(np.int64).max


class Measure(IntEnum):
    NONE = 0
    CPU_US = 1
    MEM_BYTES = 2
    IO_READ = 3
    IO_WRITE = 4
    NET_RX = 5
    NET_TX = 6
    SPEC_VCPU = 7
    SPEC_MEM = 8


COUNTERS = (Measure.CPU_US, Measure.IO_READ, Measure.IO_WRITE, Measure.NET_RX, Measure.NET_TX)


@dataclass
class SeriesFrame:
    """The accountable samples of a flush, one array per field."""

    gid: npt.NDArray[Any]
    key: npt.NDArray[Any]
    ts: npt.NDArray[Any]
    val: npt.NDArray[Any]
    measure: npt.NDArray[Any]
    bidx: npt.NDArray[Any]


@dataclass
class Amounts:
    """What each accounted sample adds to its (sandbox, batch) row (spec samples excluded)."""

    gid: npt.NDArray[np.int64]
    bidx: npt.NDArray[np.int64]
    measure: npt.NDArray[np.int8]
    amount: npt.NDArray[np.int64]
    start: npt.NDArray[np.int64]  # the span the amount covers, clipped to the sandbox's [start, stop)
    end: npt.NDArray[np.int64]


@dataclass
class SeriesUsage:
    usage: Amounts
    late: pd.DataFrame
    duplicates: int
    clamped: int
    spec: dict[tuple[int, int], tuple[int | None, int | None]]  # (gid, bidx) -> (vCPU milli, memory bytes)


def _running_max_before(ts: npt.NDArray[np.int64], first: npt.NDArray[np.bool_]) -> npt.NDArray[np.int64]:
    """For each sample, the largest `ts` before it in its group (groups are runs that begin
    where `first` is set); I64_MIN for a group's first sample. numpy only: groups and ranks
    are folded into one increasing integer so a single maximum.accumulate does every group."""
    if not ts.size:
        return ts.copy()
    uniq, rank = np.unique(ts, return_inverse=True)
    group = np.cumsum(first) - 1
    width = np.int64(len(uniq))
    running = np.maximum.accumulate(group * width + rank) - group * width
    out = np.empty_like(ts)
    out[1:] = uniq[running[:-1]]
    out[first] = I64_MIN
    return out


def account_series(
    c: SeriesFrame, state: SeriesState, known: dict[str, npt.NDArray[np.int64]], max_rate: float
) -> SeriesUsage:
    """Deltas and integrals of the flush's samples; updates `state`. `known` holds each
    sandbox's start and stop and from which batch of the flush on they are known."""
    order = np.lexsort((c.ts, c.bidx, c.key))
    key, ts, val, meas, gid, bidx = (a[order] for a in (c.key, c.ts, c.val, c.measure, c.gid, c.bidx))
    first = np.ones(key.shape[0], bool)
    first[1:] = key[1:] != key[:-1]
    slot: npt.NDArray[Any] = state.lookup(key)
    state_ts = np.where(slot >= 0, state.take_ts(slot), I64_MIN)
    newest = np.maximum(_running_max_before(ts, first), state_ts)
    dup = ts == newest  # a sample seen before (a replayed batch) counts once
    late = ts < newest
    keep = ts > newest
    late_df = pd.DataFrame({"gid": gid[late], "ts": ts[late], "val": val[late], "key": key[late], "bidx": bidx[late]})
    key, ts, val, meas, gid, bidx, slot = (a[keep] for a in (key, ts, val, meas, gid, bidx, slot))
    first = np.ones(key.shape[0], bool)
    first[1:] = key[1:] != key[:-1]
    new = first & (slot < 0)
    prev_ts = np.where(first, state.take_ts(slot), np.roll(ts, 1))
    prev_val = np.where(first, state.take_val(slot), np.roll(val, 1))
    # what this sample's batch knows of its sandbox: start and stop bound every gauge integral
    lo = np.where(known["start_at"][gid] <= bidx, known["start"][gid], I64_MIN) if gid.size else gid
    hi = np.where(known["stop_at"][gid] <= bidx, known["stop"][gid], I64_MAX) if gid.size else gid
    is_counter = np.isin(meas, [int(m) for m in COUNTERS])
    # a series seen for the first time: its counter started at 0 when the sandbox did; a gauge
    # is integrated from the sandbox's start when that is known
    prev_ts = np.where(new, np.where((lo > I64_MIN) & (lo <= ts), lo, ts), prev_ts)
    prev_val = np.where(new, np.where(is_counter, 0.0, val), prev_val)
    dt = ts - prev_ts
    v_i = val.astype(np.int64)
    pv_i = prev_val.astype(np.int64)
    delta = np.where(v_i >= pv_i, v_i - pv_i, v_i)  # reset: the counter restarted from 0
    too_fast = is_counter & (delta > max_rate * np.maximum(dt, 1) / 1000.0)
    delta = np.where(too_fast, 0, delta)
    span_start = np.maximum(prev_ts, lo)
    span_end = np.minimum(ts, hi)
    area = (v_i + pv_i) * np.maximum(span_end - span_start, 0) // 2  # the mean height over [start, stop)
    amount = np.where(is_counter, delta, np.where(meas == Measure.MEM_BYTES, area, 0))
    is_spec = (meas == Measure.SPEC_VCPU) | (meas == Measure.SPEC_MEM)
    if key.size:
        last = np.ones(key.shape[0], bool)
        last[:-1] = key[1:] != key[:-1]
        state.update(key[last], ts[last], val[last])
    k = ~is_spec
    usage = Amounts(gid[k], bidx[k], meas[k], amount[k].astype(np.int64), span_start[k], span_end[k])
    return SeriesUsage(usage, late_df, int(dup.sum()), int(too_fast.sum()), _spec(gid, bidx, meas, val))


def _spec(
    gid: npt.NDArray[Any], bidx: npt.NDArray[Any], meas: npt.NDArray[Any], val: npt.NDArray[Any]
) -> dict[tuple[int, int], tuple[int | None, int | None]]:
    """(gid, batch) -> the spec its accounted samples say (replays say nothing: they are duplicates)."""
    sel = (meas == Measure.SPEC_VCPU) | (meas == Measure.SPEC_MEM)
    out: dict[tuple[int, int], tuple[int | None, int | None]] = {}
    # samples are in time order within (series, batch): the last one of each wins
    for g, b, m, v in zip(gid[sel].tolist(), bidx[sel].tolist(), meas[sel].tolist(), val[sel].tolist(), strict=True):
        vc, mem = out.get((g, b), (None, None))
        out[(g, b)] = (int(v), mem) if m == Measure.SPEC_VCPU else (vc, int(v))
    return out
