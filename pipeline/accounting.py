"""Turns sample batches into exact per-sandbox usage intervals (formulas: docs/metering.md).

Everything per sample is numpy over the whole flush; Python loops run per batch and per
sandbox only. Counters become deltas with resets handled like PromQL `increase`; the memory
gauge is integrated (trapezoid, integer byte-ms); allocated capacity comes from each
sandbox's spec between its lifecycle events.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from contracts import names as n
from contracts.quantities import COLUMNS
from contracts.wire import EventKind, SampleBatch
from pipeline.state import SandboxState, SeriesState


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
_BY_METRIC = {
    n.M_CG_CPU_USAGE_US: Measure.CPU_US,
    n.M_CG_MEM_CURRENT: Measure.MEM_BYTES,
    n.M_CG_IO_RBYTES: Measure.IO_READ,
    n.M_CG_IO_WBYTES: Measure.IO_WRITE,
    n.M_SPEC_VCPU_MILLI: Measure.SPEC_VCPU,
    n.M_SPEC_MEM_BYTES: Measure.SPEC_MEM,
}
_NET_ITEMS = {'item="recv_bytes"': Measure.NET_RX, 'item="sent_bytes"': Measure.NET_TX}

USAGE_COLUMNS = ("tenant", "sandbox_id", "node", "start_ms", "end_ms", *COLUMNS, "batch_id")
# a sandbox_lifecycle row: tenant, sandbox, node, event (start|stop), ts, vCPU millicores, memory, batch
LIFECYCLE_COLUMNS = ("tenant", "sandbox_id", "node", "event", "ts_ms", "vcpu_millicores", "memory_bytes", "batch_id")
LifecycleRow = tuple[str, str, str, str, int, int, int, str]
_MEASURE_COLUMN = {
    Measure.CPU_US: "cpu_used_us",
    Measure.MEM_BYTES: "mem_used_byte_ms",
    Measure.IO_READ: "io_read_bytes",
    Measure.IO_WRITE: "io_write_bytes",
    Measure.NET_RX: "net_rx_bytes",
    Measure.NET_TX: "net_tx_bytes",
}


@dataclass
class _Columns:
    """The accountable samples of a flush, one array per field, plus each batch's entity gids."""

    gid: npt.NDArray[Any]
    key: npt.NDArray[Any]
    ts: npt.NDArray[Any]
    val: npt.NDArray[Any]
    measure: npt.NDArray[Any]
    bidx: npt.NDArray[Any]
    sandbox_gids: list[npt.NDArray[np.int64]]


@dataclass
class _SeriesUsage:
    frame: pd.DataFrame  # gid, bidx, measure, amount, start, end (spec samples excluded)
    late: pd.DataFrame
    duplicates: int
    clamped: int


@dataclass
class Result:
    usage: pd.DataFrame
    lifecycle: list[LifecycleRow] = field(default_factory=list)
    late: pd.DataFrame | None = None
    duplicates: int = 0
    clamped: int = 0
    samples: int = 0


def _net_sub_measure(sub: str) -> Measure:
    for item, m in _NET_ITEMS.items():
        if item in sub:
            return m
    return Measure.NONE


class Accountant:
    def __init__(self, max_counter_rate_per_s: float = 1e12) -> None:
        self.series = SeriesState()
        self.sandboxes: dict[tuple[str, str], SandboxState] = {}
        self._by_gid: list[SandboxState] = []
        self._metric_ids: dict[str, int] = {}
        self._sub_ids: dict[str, int] = {}
        self.max_rate = max_counter_rate_per_s

    def snapshot(self) -> tuple[object, ...]:
        """A copy of all state, cheap enough to take before every flush."""
        return (
            self.series.copy(),
            {k: dataclasses.replace(v, labels=dict(v.labels)) for k, v in self.sandboxes.items()},
            dict(self._metric_ids),
            dict(self._sub_ids),
        )

    def restore(self, snap: tuple[object, ...]) -> None:
        series, sandboxes, metric_ids, sub_ids = snap
        assert isinstance(series, SeriesState) and isinstance(sandboxes, dict)
        assert isinstance(metric_ids, dict) and isinstance(sub_ids, dict)
        self.series = series
        self.sandboxes = sandboxes
        self._by_gid = sorted(sandboxes.values(), key=lambda s: s.gid)
        self._metric_ids, self._sub_ids = metric_ids, sub_ids

    # -- interning (per entity / metric / sub-label, never per sample) --------------------
    def _sandbox(self, node: str, sandbox_id: str, labels: dict[str, str]) -> SandboxState:
        key = (node, sandbox_id)
        s = self.sandboxes.get(key)
        if s is None:
            s = SandboxState(len(self._by_gid), node, sandbox_id, labels.get("tenant", n.UNATTRIBUTED))
            self.sandboxes[key] = s
            self._by_gid.append(s)
        if labels:
            s.labels = dict(labels)
            s.tenant = labels.get("tenant", s.tenant)
        return s

    def _intern(self, table: dict[str, int], values: Sequence[str], limit: int) -> npt.NDArray[np.uint64]:
        out = np.empty(len(values), np.uint64)
        for i, v in enumerate(values):
            ix = table.get(v)
            if ix is None:
                if len(table) >= limit:
                    raise OverflowError(f"more than {limit} distinct values")
                ix = table[v] = len(table)
            out[i] = ix
        return out

    def late_frame(self, late: pd.DataFrame, now_ms: int) -> pd.DataFrame:
        """Late rows with their names restored, for the late-data table."""
        metric_names = {v: k for k, v in self._metric_ids.items()}
        sub_names = {v: k for k, v in self._sub_ids.items()}
        key = late["key"].to_numpy(np.uint64)
        sb = [self._by_gid[g] for g in late["gid"].tolist()]
        return pd.DataFrame(
            {
                "node": [s.node for s in sb],
                "sandbox_id": [s.sandbox_id for s in sb],
                "tenant": [s.tenant for s in sb],
                "metric": [metric_names[int(m)] for m in ((key >> np.uint64(16)) & np.uint64(0xFFFF)).tolist()],
                "labels": [sub_names[int(x)] for x in (key & np.uint64(0xFFFF)).tolist()],
                "ts_ms": late["ts"].to_numpy(np.uint64),
                "value": late["val"].to_numpy(np.float64),
                "batch_id": "",
                "reason": "older_than_series_state",
                "received_ms": np.full(len(late), now_ms, np.uint64),
            }
        )

    # -- the flush ---------------------------------------------------------------------
    def process(self, batches: Sequence[SampleBatch]) -> Result:
        cols = self._columns(batches)
        self._note_starts(batches, cols.sandbox_gids)
        series = self._series_usage(cols)
        alloc, lifecycle = self._allocation(batches, cols.sandbox_gids)
        return Result(
            usage=self._usage_rows(series.frame, alloc, batches),
            lifecycle=lifecycle,
            late=series.late,
            duplicates=series.duplicates,
            clamped=series.clamped,
            samples=int(sum(len(b) for b in batches)),
        )

    def _columns(self, batches: Sequence[SampleBatch]) -> _Columns:
        gids, keys, ts, val, meas, bidx, sandbox_gids = [], [], [], [], [], [], []
        for i, b in enumerate(batches):
            ent_gid = np.array(
                [self._sandbox(b.node, e.id, dict(e.labels)).gid if e.id else -1 for e in b.entities],
                np.int64,
            )
            sandbox_gids.append(ent_gid)
            met_m = np.array([_BY_METRIC.get(m, Measure.NONE) for m in b.metrics], np.int8)
            is_net = np.array([m == n.M_KATA_NETDEV for m in b.metrics], bool)
            sub_m = np.array([_net_sub_measure(s) for s in b.subs], np.int8)
            m = met_m[b.metric] if len(b.metrics) else np.zeros(0, np.int8)
            if is_net.any():
                m = np.where(is_net[b.metric], sub_m[b.sub], m)
            g = ent_gid[b.entity]
            keep = (m != Measure.NONE) & (g >= 0)
            if not keep.any():
                continue
            mid = self._intern(self._metric_ids, b.metrics, 1 << 16)[b.metric[keep]]
            sid = self._intern(self._sub_ids, b.subs, 1 << 16)[b.sub[keep]]
            gk = g[keep].astype(np.uint64)
            keys.append((gk << np.uint64(32)) | (mid << np.uint64(16)) | sid)
            gids.append(g[keep])
            ts.append(b.ts_ms[keep])
            val.append(b.value[keep])
            meas.append(m[keep])
            bidx.append(np.full(int(keep.sum()), i, np.int64))

        def cat(parts: Sequence[npt.NDArray[Any]], dtype: type) -> npt.NDArray[Any]:
            return np.concatenate(parts) if parts else np.zeros(0, dtype)

        return _Columns(
            gid=cat(gids, np.int64), key=cat(keys, np.uint64), ts=cat(ts, np.int64), val=cat(val, np.float64),
            measure=cat(meas, np.int8), bidx=cat(bidx, np.int64), sandbox_gids=sandbox_gids,
        )  # fmt: skip

    def _note_starts(self, batches: Sequence[SampleBatch], sandbox_gids: Sequence[npt.NDArray[np.int64]]) -> None:
        for b, gids in zip(batches, sandbox_gids, strict=True):
            for e, k, t in zip(b.ev_entity.tolist(), b.ev_kind.tolist(), b.ev_ts_ms.tolist(), strict=True):
                s = self._by_gid[gids[e]] if gids[e] >= 0 else None
                if s is not None and k == EventKind.START and s.start_ms is None:
                    s.start_ms = t

    def _series_usage(self, c: _Columns) -> _SeriesUsage:
        key, ts, val, meas, gid, bidx = c.key, c.ts, c.val, c.measure, c.gid, c.bidx
        order = np.lexsort((ts, key))
        key, ts, val, meas, gid, bidx = (a[order] for a in (key, ts, val, meas, gid, bidx))
        # exact repeats inside the flush (a replayed batch) count once
        dup = np.zeros(key.shape[0], bool)
        dup[1:] = (key[1:] == key[:-1]) & (ts[1:] == ts[:-1])
        slot: npt.NDArray[Any] = self.series.lookup(key)
        known = slot >= 0
        state_ts = self.series.take_ts(slot)
        dup |= known & (ts == state_ts)
        late = known & (ts < state_ts) & ~dup
        keep = ~(dup | late)
        late_df = pd.DataFrame({"gid": gid[late], "ts": ts[late], "val": val[late], "key": key[late]})
        duplicates = int(dup.sum())
        key, ts, val, meas, gid, bidx, slot = (a[keep] for a in (key, ts, val, meas, gid, bidx, slot))
        first = np.ones(key.shape[0], bool)
        first[1:] = key[1:] != key[:-1]
        prev_ts = np.where(first, self.series.take_ts(slot), np.roll(ts, 1))
        prev_val = np.where(first, self.series.take_val(slot), np.roll(val, 1))
        new = prev_ts < 0
        # a series seen for the first time: its counter started at 0 when the sandbox did;
        # a gauge is integrated from the sandbox start when that is known
        starts = np.array([s.start_ms if s.start_ms is not None else -1 for s in self._by_gid], np.int64)
        sb_start = starts[gid] if gid.size else np.zeros(0, np.int64)
        is_counter = np.isin(meas, [int(m) for m in COUNTERS])
        prev_ts = np.where(new, np.where((sb_start >= 0) & (sb_start <= ts), sb_start, ts), prev_ts)
        prev_val = np.where(new, np.where(is_counter, 0.0, val), prev_val)
        dt = ts - prev_ts
        v_i = val.astype(np.int64)
        pv_i = prev_val.astype(np.int64)
        delta = np.where(v_i >= pv_i, v_i - pv_i, v_i)  # reset: the counter restarted from 0
        too_fast = is_counter & (delta > self.max_rate * np.maximum(dt, 1) / 1000.0)
        delta = np.where(too_fast, 0, delta)
        area = (v_i + pv_i) * dt // 2
        amount = np.where(is_counter, delta, np.where(meas == Measure.MEM_BYTES, area, 0))
        is_spec = (meas == Measure.SPEC_VCPU) | (meas == Measure.SPEC_MEM)
        if key.size:
            last = np.ones(key.shape[0], bool)
            last[:-1] = key[1:] != key[:-1]
            self.series.update(key[last], ts[last], val[last])
        frame = pd.DataFrame({"gid": gid, "bidx": bidx, "measure": meas, "amount": amount, "start": prev_ts, "end": ts})
        return _SeriesUsage(frame[~is_spec], late_df, duplicates, int(too_fast.sum()))

    def _allocation(
        self, batches: Sequence[SampleBatch], sandbox_gids: Sequence[npt.NDArray[np.int64]]
    ) -> tuple[pd.DataFrame, list[LifecycleRow]]:
        rows: list[tuple[int, int, int, int, int, int]] = []
        lifecycle: list[LifecycleRow] = []
        for i, b in enumerate(batches):
            gids = sandbox_gids[i]
            spec = self._spec_in(b)
            # a batch may carry a sandbox's start and its stop (a stop handler's batch does)
            events: dict[tuple[int, EventKind], int] = {
                (int(gids[e]), EventKind(int(k))): int(t)
                for e, k, t in zip(b.ev_entity, b.ev_kind, b.ev_ts_ms, strict=True)
                if gids[e] >= 0
            }
            for ent_ix, g in enumerate(gids):
                if g < 0:
                    continue
                s = self._by_gid[g]
                if ent_ix in spec:
                    s.vcpu_milli, s.mem_max = spec[ent_ix]
                start_ts = events.get((int(g), EventKind.START))
                if start_ts is not None and s.alloc_cursor is None and not s.stopped:
                    s.alloc_cursor = start_ts
                    lifecycle.append(self._life(s, "start", start_ts, b.batch_id))
                stop_ts = events.get((int(g), EventKind.STOP))
                end = b.scrape_ts_ms if stop_ts is None else stop_ts
                # until the spec is known the cursor waits, so that time is billed at the spec
                known_spec = bool(s.vcpu_milli or s.mem_max)
                if s.alloc_cursor is not None and not s.stopped and end > s.alloc_cursor and known_spec:
                    d = end - s.alloc_cursor
                    rows.append((int(g), i, s.alloc_cursor, end, s.vcpu_milli * d, s.mem_max * d))
                    s.alloc_cursor = end
                if stop_ts is not None and not s.stopped:
                    s.stopped = True
                    lifecycle.append(self._life(s, "stop", stop_ts, b.batch_id))
        df = pd.DataFrame(rows, columns=["gid", "bidx", "astart", "aend", "vcpu_alloc_mcpu_ms", "mem_alloc_byte_ms"])
        return df, lifecycle

    @staticmethod
    def _life(s: SandboxState, event: str, ts: int, batch_id: str) -> LifecycleRow:
        return (s.tenant, s.sandbox_id, s.node, event, ts, s.vcpu_milli, s.mem_max, batch_id)

    @staticmethod
    def _spec_in(b: SampleBatch) -> dict[int, tuple[int, int]]:
        """Entity index -> (vcpu millicores, memory bytes) reported in this batch."""
        try:
            mv = b.metrics.index(n.M_SPEC_VCPU_MILLI)
            mm = b.metrics.index(n.M_SPEC_MEM_BYTES)
        except ValueError:
            return {}
        out: dict[int, tuple[int, int]] = {}
        vc = b.metric == mv
        mem = dict(zip(b.entity[b.metric == mm].tolist(), b.value[b.metric == mm].tolist(), strict=True))
        for e, v in zip(b.entity[vc].tolist(), b.value[vc].tolist(), strict=True):
            out[e] = (int(v), int(mem.get(e, 0)))
        return out

    def _usage_rows(self, f: pd.DataFrame, alloc: pd.DataFrame, batches: Sequence[SampleBatch]) -> pd.DataFrame:
        piv = f.pivot_table(index=["gid", "bidx"], columns="measure", values="amount", aggfunc="sum", fill_value=0)
        piv.columns = [_MEASURE_COLUMN[Measure(int(c))] for c in piv.columns]
        span = f.groupby(["gid", "bidx"]).agg(start=("start", "min"), end=("end", "max"))
        u = piv.join(span, how="outer").join(alloc.set_index(["gid", "bidx"]), how="outer").reset_index()
        if u.empty:
            return pd.DataFrame(columns=list(USAGE_COLUMNS))
        u["start_ms"] = u[["start", "astart"]].min(axis=1)
        u["end_ms"] = u[["end", "aend"]].max(axis=1)
        for col in (*COLUMNS, "start_ms", "end_ms"):
            u[col] = u[col].fillna(0).astype(np.int64) if col in u else np.int64(0)
        sb = [self._by_gid[g] for g in u["gid"].tolist()]
        u["tenant"] = [s.tenant for s in sb]
        u["sandbox_id"] = [s.sandbox_id for s in sb]
        u["node"] = [s.node for s in sb]
        ids = np.array([b.batch_id for b in batches], dtype=object)
        u["batch_id"] = ids[u["bidx"].to_numpy(np.int64)]
        return u[list(USAGE_COLUMNS)]


@dataclass
class StateFrames:
    """Accounting state by name, portable between processes: what a checkpoint holds."""

    sandboxes: pd.DataFrame  # SANDBOX_COLUMNS
    series: pd.DataFrame  # SERIES_COLUMNS


SANDBOX_COLUMNS = (
    "node", "sandbox_id", "tenant", "labels", "vcpu_milli", "mem_max", "start_ms", "alloc_cursor", "stopped",
)  # fmt: skip
SERIES_COLUMNS = ("node", "sandbox_id", "metric", "sub", "ts", "val")


def export_state(
    acct: Accountant, nodes: frozenset[str] | None = None, evict_before_ms: int | None = None
) -> StateFrames:
    """The state of `nodes` (all when None), by name. Sandboxes stopped and silent since
    before `evict_before_ms` are left out: their usage is final and nothing can follow."""
    sbs = acct._by_gid
    if not sbs:
        return StateFrames(pd.DataFrame(columns=list(SANDBOX_COLUMNS)), pd.DataFrame(columns=list(SERIES_COLUMNS)))
    gid_node = np.array([s.node for s in sbs], dtype=object)
    gid_sb = np.array([s.sandbox_id for s in sbs], dtype=object)
    key = acct.series.keys()
    s_gid = (key >> np.uint64(32)).astype(np.int64)
    last = np.full(len(sbs), -1, np.int64)
    np.maximum.at(last, s_gid, acct.series.ts)
    keep_sb = np.ones(len(sbs), bool)
    if nodes is not None:
        keep_sb &= np.isin(gid_node, list(nodes))
    if evict_before_ms is not None:
        stopped = np.array([s.stopped for s in sbs], bool)
        keep_sb &= ~(stopped & (last < evict_before_ms))
    kept = [s for s, k in zip(sbs, keep_sb.tolist(), strict=True) if k]
    sandboxes = pd.DataFrame(
        [
            (s.node, s.sandbox_id, s.tenant, json.dumps(s.labels, sort_keys=True), s.vcpu_milli, s.mem_max,
             -1 if s.start_ms is None else s.start_ms, -1 if s.alloc_cursor is None else s.alloc_cursor, s.stopped)
            for s in kept
        ],
        columns=list(SANDBOX_COLUMNS),
    )  # fmt: skip
    metric_names = np.empty(len(acct._metric_ids), dtype=object)
    for name, ix in acct._metric_ids.items():
        metric_names[ix] = name
    sub_names = np.empty(len(acct._sub_ids), dtype=object)
    for name, ix in acct._sub_ids.items():
        sub_names[ix] = name
    sel = keep_sb[s_gid]
    k = key[sel]
    series = pd.DataFrame(
        {
            "node": gid_node[s_gid[sel]],
            "sandbox_id": gid_sb[s_gid[sel]],
            "metric": metric_names[((k >> np.uint64(16)) & np.uint64(0xFFFF)).astype(np.int64)],
            "sub": sub_names[(k & np.uint64(0xFFFF)).astype(np.int64)],
            "ts": acct.series.ts[sel],
            "val": acct.series.val[sel],
        }
    )
    return StateFrames(sandboxes, series)


def import_state(acct: Accountant, state: StateFrames) -> None:
    """Adds `state` to `acct`, whose state must not already hold these sandboxes."""
    d = state.sandboxes
    cols = [d[c].tolist() for c in SANDBOX_COLUMNS]
    for node, sid, tenant, labels, vcpu, mem, start, cursor, stopped in zip(*cols, strict=True):  # per sandbox
        s = acct._sandbox(str(node), str(sid), json.loads(labels))
        s.tenant = str(tenant)
        s.vcpu_milli, s.mem_max = int(vcpu), int(mem)
        s.start_ms = None if start < 0 else int(start)
        s.alloc_cursor = None if cursor < 0 else int(cursor)
        s.stopped = bool(stopped)
    ser = state.series
    if not len(ser):
        return
    gid_of = {(s.node, s.sandbox_id): s.gid for s in acct._by_gid}
    gid = np.array([gid_of[k] for k in zip(ser["node"].tolist(), ser["sandbox_id"].tolist(), strict=True)], np.uint64)
    metrics, mix = np.unique(ser["metric"].to_numpy(str), return_inverse=True)
    subs, six = np.unique(ser["sub"].to_numpy(str), return_inverse=True)
    mid = acct._intern(acct._metric_ids, metrics.tolist(), 1 << 16)[mix]
    sid = acct._intern(acct._sub_ids, subs.tolist(), 1 << 16)[six]
    keys = (gid << np.uint64(32)) | (mid << np.uint64(16)) | sid
    acct.series.update(keys, ser["ts"].to_numpy(np.int64), ser["val"].to_numpy(np.float64))


def rebuilt(acct: Accountant, nodes: frozenset[str] | None = None, evict_before_ms: int | None = None) -> Accountant:
    """A fresh Accountant holding `acct`'s state for `nodes`, minus evicted sandboxes."""
    out = Accountant(acct.max_rate)
    import_state(out, export_state(acct, nodes, evict_before_ms))
    return out
