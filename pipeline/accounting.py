"""Turns sample batches into exact per-sandbox usage intervals (formulas: docs/metering.md).

Everything per sample is numpy over the whole flush; Python loops run per batch and per
sandbox only. Counters become deltas with resets handled like PromQL `increase`; the memory
gauge is integrated (trapezoid, integer byte-ms) clipped to the sandbox's [start, stop);
allocated capacity comes from each sandbox's spec between its lifecycle events.

Rows are a pure function of each node's batch sequence: whatever the flush boundaries, a
batch is accounted as if it were processed alone after the batches before it. Attributes
(tenant, labels, spec, start, stop) are taken per batch, from what that batch and the ones
before it said; a sample is late or a duplicate against the series' state after the batches
before its own. A sandbox's tenant and labels are fixed at its first attributed sight.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import gc
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from contracts import names as n
from contracts.quantities import COLUMNS
from contracts.wire import EventKind, SampleBatch
from pipeline.accounted import Accounted, checked_usage, empty_late, function_load, late_rows
from pipeline.functions import Functions
from pipeline.screen import REASON, Limits, counters_of, screen
from pipeline.series import COUNTERS, I64_MAX, I64_MIN, Amounts, Measure, SeriesFrame, account_series
from pipeline.state import SandboxState, SeriesState

_BY_METRIC = {
    n.M_CG_CPU_USAGE_US: Measure.CPU_US,
    n.M_CG_MEM_CURRENT: Measure.MEM_BYTES,
    n.M_CG_IO_RBYTES: Measure.IO_READ,
    n.M_CG_IO_WBYTES: Measure.IO_WRITE,
    n.M_NET_RX_BYTES: Measure.NET_RX,
    n.M_NET_TX_BYTES: Measure.NET_TX,
    n.M_SPEC_VCPU_MILLI: Measure.SPEC_VCPU,
    n.M_SPEC_MEM_BYTES: Measure.SPEC_MEM,
}

# the metrics whose values are billed: validation holds them to non-negative, physical values
BILLED_METRICS = frozenset(_BY_METRIC)
USAGE_COLUMNS = ("tenant", "sandbox_id", "node", "start_ms", "end_ms", *COLUMNS, "batch_id")
# a sandbox_lifecycle row: tenant, sandbox, node, event (start|stop), ts, vCPU millicores, memory, batch
LIFECYCLE_COLUMNS = ("tenant", "sandbox_id", "node", "event", "ts_ms", "vcpu_millicores", "memory_bytes", "batch_id")
_MEASURE_COLUMN = {
    Measure.CPU_US: "cpu_used_us",
    Measure.MEM_BYTES: "mem_used_byte_ms",
    Measure.IO_READ: "io_read_bytes",
    Measure.IO_WRITE: "io_write_bytes",
    Measure.NET_RX: "net_rx_bytes",
    Measure.NET_TX: "net_tx_bytes",
}
LifecycleRow = tuple[str, str, str, str, int, int, int, str]
_NEVER = np.iinfo(np.int64).max  # a batch index no batch reaches: "not known in this flush"
MAX_CONFLICT_NOTES = 5


@dataclass
class Result:
    usage: pd.DataFrame  # USAGE_COLUMNS, one row per (sandbox, batch)
    lifecycle: list[LifecycleRow] = field(default_factory=list)
    late: pd.DataFrame | None = None
    duplicates: int = 0
    clamped: int = 0
    samples: int = 0
    # aligned with `usage`: each row's sandbox labels and vCPU spec as of its batch
    attrs: pd.DataFrame | None = None
    label_conflicts: int = 0  # attributed labels that differ from a sandbox's fixed ones (not applied)
    conflict_notes: list[str] = field(default_factory=list)
    rejected: pd.DataFrame | None = None  # counter samples the screen refused (gid, key, ts, val, bidx, reason)


@dataclass
class _Flush:
    """Per-batch facts of one flush, gathered while interning."""

    gids: list[npt.NDArray[np.int64]]  # per batch: entity index -> sandbox gid (-1: the node)
    attrs: list[dict[int, tuple[str, dict[str, str]]]]  # per batch: gid -> (tenant, labels) as of it
    conflicts: int = 0
    notes: list[str] = field(default_factory=list)


class Accountant:
    def __init__(
        self, max_counter_rate_per_s: float = 1e12, limits: Limits | None = None, functions: Functions | None = None
    ) -> None:
        self.series = SeriesState()
        self.sandboxes: dict[tuple[str, str], SandboxState] = {}
        self._by_gid: list[SandboxState] = []
        self._metric_ids: dict[str, int] = {}
        self._sub_ids: dict[str, int] = {}
        self.max_rate = max_counter_rate_per_s
        self.limits = limits or Limits(bytes_per_s=max_counter_rate_per_s)
        self.functions = functions or Functions()

    def snapshot(self) -> tuple[object, ...]:
        """A copy of all state, cheap enough to take before every flush."""
        return (
            self.series.copy(),
            {k: copy.copy(v) for k, v in self.sandboxes.items()},  # labels are replaced, never changed in place
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
    def _sandbox(self, node: str, sandbox_id: str, labels: dict[str, str]) -> tuple[SandboxState, str | None]:
        """The sandbox's state after seeing `labels`, and a note if they contradict its fixed ones.

        Until a batch names its tenant the labels follow the latest batch; the first labels
        with a tenant fix tenant and labels for good. Later ones without a tenant (a source
        that does not know it) change nothing; later ones that say otherwise are reported.
        """
        key = (node, sandbox_id)
        s = self.sandboxes.get(key)
        if s is None:
            s = SandboxState(len(self._by_gid), node, sandbox_id, n.UNATTRIBUTED)
            self.sandboxes[key] = s
            self._by_gid.append(s)
        tenant = labels.get("tenant") or n.UNATTRIBUTED
        if s.tenant == n.UNATTRIBUTED:
            if labels:
                s.labels = dict(labels)
            s.tenant = tenant
            return s, None
        if tenant == n.UNATTRIBUTED or (tenant == s.tenant and all(s.labels.get(k, v) == v for k, v in labels.items())):
            return s, None
        clash = sorted(k for k, v in labels.items() if s.labels.get(k, v) != v)
        return s, f"{node}/{sandbox_id}: {clash[0]}={labels[clash[0]]!r} differs from the fixed {s.labels[clash[0]]!r}"

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

    def _names(self, rows: pd.DataFrame) -> pd.DataFrame:
        """Node, sandbox, tenant, metric and labels of series rows (gid, key), for late_samples."""
        metric_names = {v: k for k, v in self._metric_ids.items()}
        sub_names = {v: k for k, v in self._sub_ids.items()}
        key = rows["key"].to_numpy(np.uint64)
        sb = [self._by_gid[g] for g in rows["gid"].tolist()]
        return pd.DataFrame(
            {
                "node": [s.node for s in sb],
                "sandbox_id": [s.sandbox_id for s in sb],
                "tenant": [s.tenant for s in sb],
                "metric": [metric_names[int(m)] for m in ((key >> np.uint64(16)) & np.uint64(0xFFFF)).tolist()],
                "labels": [sub_names[int(x)] for x in (key & np.uint64(0xFFFF)).tolist()],
            }
        )

    # -- the flush ---------------------------------------------------------------------
    def process(self, batches: Sequence[SampleBatch]) -> Result:
        flush = _Flush([], [])
        frame = self._columns(batches, flush)
        bounds = self._note_events(batches, flush)
        frame, rejected = self._screened(frame)
        series = account_series(frame, self.series, bounds, self.max_rate)
        alloc, lifecycle, vcpu = self._allocation(batches, flush, series.spec)
        usage, attrs = self._usage_rows(series.usage, alloc, batches, flush, vcpu)
        return Result(
            usage=usage,
            lifecycle=lifecycle,
            late=series.late,
            duplicates=series.duplicates,
            clamped=series.clamped,
            samples=int(sum(len(b) for b in batches)),
            attrs=attrs,
            label_conflicts=flush.conflicts,
            conflict_notes=flush.notes,
            rejected=rejected,
        )

    def _screened(self, c: SeriesFrame) -> tuple[SeriesFrame, pd.DataFrame | None]:
        """The samples without the counter samples screen.py rejects, and those (before any state changes)."""
        is_counter = np.isin(c.measure, [int(m) for m in COUNTERS])
        if not is_counter.any():
            return c, None
        spec = np.array([s.vcpu_milli for s in self._by_gid], np.int64)  # per sandbox, not per sample
        is_spec = c.measure == Measure.SPEC_VCPU
        np.maximum.at(spec, c.gid[is_spec], c.val[is_spec].astype(np.int64))  # validated: finite, in range
        lim = self.limits
        cores = np.where(spec > 0, spec / 1000 + lim.cpu_headroom_cores, lim.sandbox_cpus)
        rate = np.where(c.measure == Measure.CPU_US, cores[c.gid] * 1000.0, lim.bytes_per_s / 1000.0)
        start = np.array([s.start_ms if s.start_ms is not None else -1 for s in self._by_gid], np.int64)
        cnt = counters_of(c.key, c.bidx, c.ts, c.val, is_counter, rate, self.series, start[c.gid])
        why = screen(cnt, lim.slack_ms)
        if not why.any():
            return c, None
        bad = cnt.at[why > 0]
        rejected = pd.DataFrame(
            {"gid": c.gid[bad], "key": c.key[bad], "ts": c.ts[bad], "val": c.val[bad], "bidx": c.bidx[bad],
             "reason": [REASON[int(w)] for w in why[why > 0].tolist()]}
        )  # fmt: skip
        keep = np.ones(c.key.shape[0], bool)
        keep[bad] = False
        return SeriesFrame(c.gid[keep], c.key[keep], c.ts[keep], c.val[keep], c.measure[keep], c.bidx[keep]), rejected

    def _columns(self, batches: Sequence[SampleBatch], flush: _Flush) -> SeriesFrame:
        gids, keys, ts, val, meas, bidx = [], [], [], [], [], []
        for i, b in enumerate(batches):
            ent_gid = np.full(len(b.entities), -1, np.int64)
            attrs: dict[int, tuple[str, dict[str, str]]] = {}
            for e_ix, e in enumerate(b.entities):
                if not e.id:
                    continue
                s, note = self._sandbox(b.node, e.id, dict(e.labels))
                ent_gid[e_ix] = s.gid
                attrs[s.gid] = (s.tenant, s.labels)
                if note is not None:
                    flush.conflicts += 1
                    if len(flush.notes) < MAX_CONFLICT_NOTES:
                        flush.notes.append(f"batch {b.batch_id}: {note}")
            flush.gids.append(ent_gid)
            flush.attrs.append(attrs)
            met_m = np.array([_BY_METRIC.get(m, Measure.NONE) for m in b.metrics], np.int8)
            m = met_m[b.metric] if len(b.metrics) else np.zeros(0, np.int8)
            g = ent_gid[b.entity] if len(ent_gid) else np.zeros(0, np.int64)
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

        return SeriesFrame(
            gid=cat(gids, np.int64), key=cat(keys, np.uint64), ts=cat(ts, np.int64), val=cat(val, np.float64),
            measure=cat(meas, np.int8), bidx=cat(bidx, np.int64),
        )  # fmt: skip

    def _note_events(self, batches: Sequence[SampleBatch], flush: _Flush) -> dict[str, npt.NDArray[np.int64]]:
        """Each sandbox's first start and stop, and from which batch of this flush on they are
        known (-1: before it; _NEVER: not yet): integrals in a batch use only what it knows."""
        size = len(self._by_gid)
        out = {k: np.full(size, v, np.int64) for k, v in
               (("start", -1), ("start_at", _NEVER), ("stop", -1), ("stop_at", _NEVER))}  # fmt: skip
        for s in self._by_gid:
            if s.start_ms is not None:
                out["start"][s.gid], out["start_at"][s.gid] = s.start_ms, -1
            if s.stop_ms is not None:
                out["stop"][s.gid], out["stop_at"][s.gid] = s.stop_ms, -1
        for i, (b, gids) in enumerate(zip(batches, flush.gids, strict=True)):
            for e, k, t in zip(b.ev_entity.tolist(), b.ev_kind.tolist(), b.ev_ts_ms.tolist(), strict=True):
                g = int(gids[e]) if e < len(gids) else -1
                if g < 0:
                    continue
                s = self._by_gid[g]
                if k == EventKind.START and s.start_ms is None:
                    s.start_ms, out["start"][g], out["start_at"][g] = t, t, i
                elif k == EventKind.STOP and s.stop_ms is None:
                    s.stop_ms, out["stop"][g], out["stop_at"][g] = t, t, i
        return out

    def _allocation(
        self, batches: Sequence[SampleBatch], flush: _Flush, spec: dict[tuple[int, int], tuple[int | None, int | None]]
    ) -> tuple[list[tuple[int, int, int, int, int, int]], list[LifecycleRow], dict[tuple[int, int], int]]:
        """Allocated capacity per (sandbox, batch): from its start, to each batch's stamp, then
        to its stop, at the spec as of that batch. Also the lifecycle rows and each
        (sandbox, batch)'s vCPU spec."""
        rows: list[tuple[int, int, int, int, int, int]] = []
        lifecycle: list[LifecycleRow] = []
        vcpu: dict[tuple[int, int], int] = {}
        for i, b in enumerate(batches):
            gids = flush.gids[i]
            # a batch may carry a sandbox's start and its stop (a stop handler's batch does)
            events: dict[tuple[int, EventKind], int] = {
                (int(gids[e]), EventKind(int(k))): int(t)
                for e, k, t in zip(b.ev_entity.tolist(), b.ev_kind.tolist(), b.ev_ts_ms.tolist(), strict=True)
                if e < len(gids) and gids[e] >= 0
            }
            for g in gids.tolist():
                if g < 0:
                    continue
                s = self._by_gid[g]
                tenant = flush.attrs[i][g][0]
                v, m = spec.get((g, i), (None, None))
                s.vcpu_milli = s.vcpu_milli if v is None else v
                s.mem_max = s.mem_max if m is None else m
                vcpu[(g, i)] = s.vcpu_milli
                start_ts = events.get((g, EventKind.START))
                if start_ts is not None and s.alloc_cursor is None and not s.stopped:
                    s.alloc_cursor = start_ts
                    lifecycle.append((tenant, s.sandbox_id, s.node, "start", start_ts, s.vcpu_milli, s.mem_max,
                                      b.batch_id))  # fmt: skip
                stop_ts = events.get((g, EventKind.STOP))
                end = b.scrape_ts_ms if stop_ts is None else stop_ts
                # until the spec is known the cursor waits, so that time is billed at the spec
                known_spec = bool(s.vcpu_milli or s.mem_max)
                if s.alloc_cursor is not None and not s.stopped and end > s.alloc_cursor and known_spec:
                    d = end - s.alloc_cursor
                    rows.append((g, i, s.alloc_cursor, end, s.vcpu_milli * d, s.mem_max * d))
                    s.alloc_cursor = end
                if stop_ts is not None and not s.stopped:
                    s.stopped = True
                    lifecycle.append((tenant, s.sandbox_id, s.node, "stop", stop_ts, s.vcpu_milli, s.mem_max,
                                      b.batch_id))  # fmt: skip
        return rows, lifecycle, vcpu

    def _usage_rows(
        self,
        f: Amounts,
        alloc: list[tuple[int, int, int, int, int, int]],
        batches: Sequence[SampleBatch],
        flush: _Flush,
        vcpu: dict[tuple[int, int], int],
    ) -> tuple[pd.DataFrame, pd.DataFrame]:
        """One row per (sandbox, batch) with anything accounted: sums and spans in numpy."""
        a = np.array(alloc, np.int64).reshape(-1, 6)
        nb = np.int64(max(1, len(batches)))
        pair = np.concatenate([f.gid * nb + f.bidx, a[:, 0] * nb + a[:, 1]])
        if not pair.size:
            return pd.DataFrame(columns=list(USAGE_COLUMNS)), pd.DataFrame(columns=["labels", "vcpu_milli"])
        keys, inv = np.unique(pair, return_inverse=True)
        nf = f.gid.shape[0]
        cols = {c: np.zeros(keys.shape[0], np.int64) for c in COLUMNS}
        for m, c in _MEASURE_COLUMN.items():
            sel = f.measure == m
            np.add.at(cols[c], inv[:nf][sel], f.amount[sel])
        np.add.at(cols["vcpu_alloc_mcpu_ms"], inv[nf:], a[:, 4])
        np.add.at(cols["mem_alloc_byte_ms"], inv[nf:], a[:, 5])
        start = np.full(keys.shape[0], I64_MAX, np.int64)
        end = np.full(keys.shape[0], I64_MIN, np.int64)
        np.minimum.at(start, inv, np.concatenate([f.start, a[:, 2]]))
        np.maximum.at(end, inv, np.concatenate([f.end, a[:, 3]]))
        pairs = list(zip((keys // nb).tolist(), (keys % nb).tolist(), strict=True))  # per sandbox and batch
        sb = [self._by_gid[g] for g, _ in pairs]
        ids = np.array([b.batch_id for b in batches], dtype=object)
        u = pd.DataFrame(
            {
                "tenant": [flush.attrs[b][g][0] for g, b in pairs],
                "sandbox_id": [s.sandbox_id for s in sb],
                "node": [s.node for s in sb],
                "start_ms": np.minimum(start, end),
                "end_ms": end,
                **cols,
                "batch_id": ids[keys % nb],
            }
        )
        attrs = pd.DataFrame(
            {
                "labels": [flush.attrs[b][g][1] for g, b in pairs],
                "vcpu_milli": np.array([vcpu.get(p, 0) for p in pairs], np.int64),
            }
        )
        return u[list(USAGE_COLUMNS)], attrs

    # -- what the processor uses; nothing outside this class reads the state above ------------
    def account(self, batches: Sequence[SampleBatch], now_ms: int) -> Accounted:
        """Accounts validated `batches` (in order) into the one result the processor writes.

        Raises (leaving the state partly updated: take a `snapshot()` first) when a batch
        cannot be accounted, including UnsafeUsage for a row no column can hold.
        """
        empty = Result(pd.DataFrame(columns=list(USAGE_COLUMNS)))
        r = self.process([billable(b) for b in batches]) if batches else empty
        rows = [df for df in (r.late, r.rejected) if df is not None and len(df)]
        late = pd.concat(rows, ignore_index=True) if rows else None
        ids = [b.batch_id for b in batches]
        life = pd.DataFrame(r.lifecycle, columns=list(LIFECYCLE_COLUMNS)).astype(
            {"ts_ms": np.uint64, "vcpu_millicores": np.uint32, "memory_bytes": np.uint64}
        )
        usage = checked_usage(r.usage[list(USAGE_COLUMNS)])
        rejected = r.rejected["reason"].value_counts().to_dict() if r.rejected is not None else {}
        return Accounted(
            usage=usage,
            lifecycle=life,
            late=empty_late() if late is None else late_rows(late, ids, now_ms, self._names),
            function_load=function_load(usage, r.attrs, batches, self.functions.of),
            health_input=tuple(batches),
            samples=int(sum(len(b) for b in batches)),  # every sample taken, not only the billed ones
            duplicates=r.duplicates,
            clamped=r.clamped,
            late_samples=0 if r.late is None else len(r.late),
            rejected={str(k): int(v) for k, v in rejected.items()},
            label_conflicts=r.label_conflicts,
            conflict_notes=tuple(r.conflict_notes),
        )

    def export_state(self, nodes: frozenset[str] | None = None) -> StateFrames:
        """The state of `nodes` (all when None) by name, for a checkpoint."""
        return export_state(self, nodes)

    def import_state(self, state: StateFrames) -> None:
        """Adds a checkpoint's state; drop its nodes first (`without`) if they are held."""
        import_state(self, state)

    def nodes(self) -> frozenset[str]:
        return frozenset(s.node for s in self._by_gid)

    def without(self, nodes: frozenset[str]) -> Accountant:
        """This state minus `nodes`' (they moved to another processor, or are about to be loaded)."""
        held = self.nodes()
        return rebuilt(self, nodes=held - nodes) if held & nodes else self

    def evicted(self, before_ms: int) -> tuple[Accountant, int]:
        """This state minus the sandboxes stopped and silent since before `before_ms` (their usage
        is final), and how many went."""
        # a stopped sandbox's allocation cursor is its stop time: rebuild only when one is old enough
        if not any(s.stopped and (s.alloc_cursor or 0) < before_ms for s in self._by_gid):
            return self, 0
        out = rebuilt(self, evict_before_ms=before_ms)
        return out, len(self.sandboxes) - len(out.sandboxes)

    def size(self) -> tuple[int, int, int]:
        """(series, sandboxes, bytes of the series arrays) for the status line and gauges."""
        return len(self.series), len(self.sandboxes), self.series.nbytes()


@functools.lru_cache(maxsize=4096)
def _billed_table(metrics: tuple[str, ...]) -> npt.NDArray[np.bool_]:
    return np.array([m in BILLED_METRICS for m in metrics], bool)


def billable(b: SampleBatch) -> SampleBatch:
    """`b` with only the samples of billed metrics (its tables, entities and events whole): all
    the accounting reads, and a few percent of a scrape, so it filters and sorts far less."""
    keep = _billed_table(tuple(b.metrics))[b.metric]
    if keep.all():
        return b
    return dataclasses.replace(
        b, entity=b.entity[keep], metric=b.metric[keep], sub=b.sub[keep], ts_ms=b.ts_ms[keep], value=b.value[keep]
    )


@dataclass
class StateFrames:
    """Accounting state by name, portable between processes: what a checkpoint holds.

    Names repeated per series (node, sandbox, metric, sub-label) are pandas categoricals, so a
    million series cost integer codes, not a million strings; `labels` holds each sandbox's
    label dict (pipeline/checkpoint.py writes them as JSON)."""

    sandboxes: pd.DataFrame  # SANDBOX_COLUMNS
    series: pd.DataFrame  # SERIES_COLUMNS


SANDBOX_COLUMNS = (
    "node", "sandbox_id", "tenant", "labels", "vcpu_milli", "mem_max", "start_ms", "alloc_cursor", "stopped",
    "stop_ms",
)  # fmt: skip
SERIES_COLUMNS = ("node", "sandbox_id", "metric", "sub", "ts", "val")
_NAMES = ("node", "sandbox_id", "metric", "sub")  # the series columns held as categoricals


def _categorical(values: Sequence[str], codes: npt.NDArray[np.int64]) -> pd.Categorical:
    """`values[codes]` as a categorical, its categories the distinct values (one hash pass over `values`)."""
    inverse, cats = pd.factorize(np.asarray(values, dtype=object))
    out: pd.Categorical = pd.Categorical.from_codes(inverse[codes] if len(codes) else codes, categories=pd.Index(cats))
    return out


@contextlib.contextmanager
def no_gc() -> Iterator[None]:
    """The cyclic collector paused: making 100,000s of objects (a large state's sandboxes) would
    otherwise run it over the whole heap again and again (import of 1M series: 0.85 -> 0.45 s)."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def export_state(
    acct: Accountant, nodes: frozenset[str] | None = None, evict_before_ms: int | None = None
) -> StateFrames:
    """The state of `nodes` (all when None), by name. Sandboxes stopped and silent since
    before `evict_before_ms` are left out: their usage is final and nothing can follow.
    Columnar: Python runs once per sandbox (its attributes), never per series."""
    sbs = acct._by_gid
    if not sbs:
        return StateFrames(pd.DataFrame(columns=list(SANDBOX_COLUMNS)), pd.DataFrame(columns=list(SERIES_COLUMNS)))
    gid_node = [s.node for s in sbs]
    key = acct.series.keys()
    s_gid = (key >> np.uint64(32)).astype(np.int64)
    last = np.full(len(sbs), -1, np.int64)
    np.maximum.at(last, s_gid, acct.series.ts)
    keep_sb = np.ones(len(sbs), bool)
    if nodes is not None:
        keep_sb &= np.isin(np.asarray(gid_node, dtype=object), list(nodes))
    if evict_before_ms is not None:
        stopped = np.array([s.stopped for s in sbs], bool)
        keep_sb &= ~(stopped & (last < evict_before_ms))
    kept = [s for s, k in zip(sbs, keep_sb.tolist(), strict=True) if k] if not keep_sb.all() else sbs
    row_of_gid = np.cumsum(keep_sb) - 1  # a kept sandbox's row in the sandboxes frame

    def opt(v: int | None) -> int:
        return -1 if v is None else v

    sandboxes = pd.DataFrame(
        {
            "node": [s.node for s in kept],
            "sandbox_id": [s.sandbox_id for s in kept],
            "tenant": [s.tenant for s in kept],
            "labels": pd.Series([s.labels for s in kept], dtype=object),
            "vcpu_milli": np.array([s.vcpu_milli for s in kept], np.int64),
            "mem_max": np.array([s.mem_max for s in kept], np.int64),
            "start_ms": np.array([opt(s.start_ms) for s in kept], np.int64),
            "alloc_cursor": np.array([opt(s.alloc_cursor) for s in kept], np.int64),
            "stopped": np.array([s.stopped for s in kept], bool),
            "stop_ms": np.array([opt(s.stop_ms) for s in kept], np.int64),
        }
    )
    metric_names = [""] * len(acct._metric_ids)
    for name, ix in acct._metric_ids.items():
        metric_names[ix] = name
    sub_names = [""] * len(acct._sub_ids)
    for name, ix in acct._sub_ids.items():
        sub_names[ix] = name
    sel = keep_sb[s_gid]
    k, rows = key[sel], row_of_gid[s_gid[sel]]
    series = pd.DataFrame(
        {
            "node": _categorical(sandboxes["node"].tolist(), rows),
            "sandbox_id": _categorical(sandboxes["sandbox_id"].tolist(), rows),
            "metric": _categorical(metric_names, ((k >> np.uint64(16)) & np.uint64(0xFFFF)).astype(np.int64)),
            "sub": _categorical(sub_names, (k & np.uint64(0xFFFF)).astype(np.int64)),
            "ts": acct.series.ts[sel],
            "val": acct.series.val[sel],
        }
    )
    return StateFrames(sandboxes, series)


def _codes(col: pd.Series) -> tuple[pd.Index, npt.NDArray[np.int64]]:
    """A name column's distinct values and each row's index among them."""
    c = col.array if isinstance(col.dtype, pd.CategoricalDtype) else pd.Categorical(col.to_numpy(str))
    assert isinstance(c, pd.Categorical)
    return pd.Index(c.categories.astype(str)), np.asarray(c.codes, np.int64)


def import_state(acct: Accountant, state: StateFrames) -> None:
    """Adds `state` to `acct`, whose state must not already hold these sandboxes."""
    d = state.sandboxes

    def column(c: str, optional: bool = False) -> list[Any]:
        v = d[c].to_numpy(np.int64) if c in d else np.full(len(d), -1, np.int64)
        return [None if x < 0 else x for x in v.tolist()] if optional else v.tolist()

    def names(c: str) -> list[str]:
        return [str(x) for x in d[c].to_numpy(dtype=object).tolist()]

    nodes, sids = names("node"), names("sandbox_id")
    keys = list(zip(nodes, sids, strict=True))
    raw_labels = d["labels"].tolist()
    attrs = (
        names("tenant"),
        [json.loads(x) if isinstance(x, str) else dict(x) for x in raw_labels],
        column("vcpu_milli"), column("mem_max"), column("start_ms", True), column("alloc_cursor", True),
        d["stopped"].to_numpy(bool).tolist(), column("stop_ms", True),
    )  # fmt: skip
    gids = np.empty(len(d), np.uint64)
    if not any(k in acct.sandboxes for k in keys):  # the usual case: one constructor call per sandbox
        first = len(acct._by_gid)
        with no_gc():
            made = list(map(SandboxState, range(first, first + len(keys)), nodes, sids, *attrs))
        acct._by_gid.extend(made)
        acct.sandboxes.update(zip(keys, made, strict=True))
        gids[:] = np.arange(first, first + len(keys), dtype=np.uint64)
    else:
        for i, (key, *a) in enumerate(zip(keys, *attrs, strict=True)):
            s = acct.sandboxes.get(key)
            if s is None:
                s = acct.sandboxes[key] = SandboxState(len(acct._by_gid), key[0], key[1], *a)
                acct._by_gid.append(s)
            else:
                s.tenant, s.labels, s.vcpu_milli, s.mem_max, s.start_ms, s.alloc_cursor, s.stopped, s.stop_ms = a
            gids[i] = s.gid
    ser = state.series
    if not len(ser):
        return
    # each series' sandbox: its (node, sandbox) pair, both as codes over the series' own categories
    node_cats, node_codes = _codes(ser["node"])
    sb_cats, sb_codes = _codes(ser["sandbox_id"])
    sb_node = node_cats.get_indexer(pd.Index(nodes))
    sb_sid = sb_cats.get_indexer(pd.Index(sids))
    pair = sb_node.astype(np.int64) * len(sb_cats) + sb_sid
    pair = np.where((sb_node < 0) | (sb_sid < 0), -1 - np.arange(len(pair)), pair)  # no series: never matched
    row = pd.Index(pair).get_indexer(node_codes * len(sb_cats) + sb_codes)
    assert (row >= 0).all(), "a series of a sandbox the state does not hold"
    gid = gids[row]
    metrics, mix = _codes(ser["metric"])
    subs, six = _codes(ser["sub"])
    mid = acct._intern(acct._metric_ids, [str(x) for x in metrics], 1 << 16)[mix]
    sid = acct._intern(acct._sub_ids, [str(x) for x in subs], 1 << 16)[six]
    keys = (gid << np.uint64(32)) | (mid << np.uint64(16)) | sid
    acct.series.update(keys, ser["ts"].to_numpy(np.int64), ser["val"].to_numpy(np.float64))


def rebuilt(acct: Accountant, nodes: frozenset[str] | None = None, evict_before_ms: int | None = None) -> Accountant:
    """A fresh Accountant holding `acct`'s state for `nodes`, minus evicted sandboxes."""
    out = Accountant(acct.max_rate, acct.limits, acct.functions)
    import_state(out, export_state(acct, nodes, evict_before_ms))
    return out
