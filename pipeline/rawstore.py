"""Raw samples as numbers: (series id, ts, value) rows plus a table naming each id once.

A series id is a 64-bit hash of (node, sandbox, metric, labels): each distinct string is
hashed once (blake2b, cached) and the per-sample combination is numpy arithmetic over the
whole flush, so no per-sample Python runs. The ids the processor has already named are kept
in a sorted array; only series new to this process get a `raw_series` row (a restart names
them again, which the table's replacing key absorbs).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from contracts.wire import SampleBatch

U64 = npt.NDArray[np.uint64]
SERIES_COLUMNS = ("series_id", "node", "sandbox_id", "tenant", "metric", "labels", "first_ms")
_M1, _M2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)
_S30, _S27, _S31 = np.uint64(30), np.uint64(27), np.uint64(31)


def _mix(x: U64) -> U64:
    """splitmix64's finaliser: a bijection that spreads every input bit over the output."""
    x = (x ^ (x >> _S30)) * _M1
    x = (x ^ (x >> _S27)) * _M2
    return x ^ (x >> _S31)


class RawSeries:
    def __init__(self, max_cached: int = 2_000_000) -> None:
        self._hashes: dict[str, int] = {}
        self.known = pd.Index(np.zeros(0, np.uint64))  # its hash table is built once per change
        self.max_cached = max_cached
        # per node: the layout of its last batch and that batch's ids
        self._last: dict[str, tuple[tuple[object, ...], tuple[npt.NDArray[np.uint16], ...], U64]] = {}

    def _h(self, kind: str, values: Sequence[str]) -> U64:
        out = np.empty(len(values), np.uint64)
        for i, v in enumerate(values):  # per distinct string of a batch, not per sample
            key = kind + v
            h = self._hashes.get(key)
            if h is None:
                h = self._hashes[key] = int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "little")
            out[i] = h
        return out

    def ids(self, b: SampleBatch) -> U64:
        """The series id of every sample of `b`."""
        return self._ids_of(b)[0]

    def _ids_of(self, b: SampleBatch) -> tuple[U64, bool]:
        """The ids of `b`'s samples, and whether they are those of an earlier batch of its node.
        A node's scrapes mostly repeat the layout of the one before (same tables, same index
        columns), and then so do the ids: those are kept, and were named when first seen."""
        last = self._last.get(b.node)
        if (
            last is not None
            and last[0] == (b.entities, b.metrics, b.subs)
            and all(np.array_equal(x, y) for x, y in zip(last[1], (b.entity, b.metric, b.sub), strict=True))
        ):
            return last[2], True
        out = self._ids(b)
        self._last[b.node] = ((b.entities, b.metrics, b.subs), (b.entity, b.metric, b.sub), out)
        return out, False

    def _ids(self, b: SampleBatch) -> U64:
        node = self._h("n\0", [b.node])
        ent = self._h("e\0", [e.id for e in b.entities])
        met = self._h("m\0", b.metrics)
        sub = self._h("s\0", b.subs)
        return _mix(_mix(_mix(node[np.zeros(len(b), np.intp)] ^ ent[b.entity]) ^ met[b.metric]) ^ sub[b.sub])

    def frames(self, batches: Sequence[SampleBatch]) -> tuple[pd.DataFrame, pd.DataFrame]:
        """(raw sample rows, rows naming the series this process has not named before)."""
        if len(self._hashes) > self.max_cached:
            self._hashes.clear()
        if len(self.known) > self.max_cached:
            self.known = pd.Index(np.zeros(0, np.uint64))
            self._last.clear()
        got = [self._ids_of(b) for b in batches]
        ids = [g[0] for g in got]
        all_ids = np.concatenate(ids) if ids else np.zeros(0, np.uint64)
        ts = np.concatenate([b.ts_ms for b in batches]).astype(np.uint64) if batches else all_ids
        # in the table's order: ClickHouse takes a sorted block ~3x faster (it skips the sort and
        # compresses better); numpy sorts without holding the GIL
        order = np.lexsort((ts, all_ids))
        samples = pd.DataFrame(
            {
                "series_id": all_ids[order],
                "ts_ms": ts[order],
                "value": (np.concatenate([b.value for b in batches]) if batches else np.zeros(0))[order],
            }
        )
        # hash lookups (no sort), skipping batches whose ids an earlier one of their node had
        check = np.repeat(np.array([not g[1] for g in got], bool), [len(b) for b in batches])
        at = np.flatnonzero(check)
        unknown = at[self.known.get_indexer(pd.Index(all_ids[at])) < 0]
        if not unknown.size:
            return samples, pd.DataFrame(columns=list(SERIES_COLUMNS))
        new_ids, first = np.unique(all_ids[unknown], return_index=True)
        self.known = self.known.append(pd.Index(new_ids))
        return samples, self._names(batches, new_ids, unknown[first])

    @staticmethod
    def _names(batches: Sequence[SampleBatch], ids: U64, at: npt.NDArray[np.intp]) -> pd.DataFrame:
        """One row per new series, from the first sample of each, by fancy indexing per batch.
        Names stay Python strings (object columns): pandas' own string type would cost a
        conversion here and another one back in the ClickHouse client."""
        order = np.argsort(at, kind="stable")
        at, ids = at[order], ids[order]
        ends = np.cumsum([len(b) for b in batches])
        bounds = np.searchsorted(at, np.concatenate([[0], ends]))
        cols: dict[str, list[npt.NDArray[Any]]] = {c: [] for c in SERIES_COLUMNS[1:]}
        for bi, b in enumerate(batches):
            lo, hi = int(bounds[bi]), int(bounds[bi + 1])
            if lo == hi:
                continue
            li = at[lo:hi] - (ends[bi] - len(b))
            ent = b.entity[li]
            cols["node"].append(np.array([b.node], dtype=object)[np.zeros(hi - lo, np.intp)])
            cols["sandbox_id"].append(np.array([e.id for e in b.entities], dtype=object)[ent])
            cols["tenant"].append(np.array([e.labels.get("tenant", "") for e in b.entities], dtype=object)[ent])
            cols["metric"].append(np.array(b.metrics, dtype=object)[b.metric[li]])
            cols["labels"].append(np.array(b.subs, dtype=object)[b.sub[li]])
            cols["first_ms"].append(b.ts_ms[li].astype(np.uint64))
        data = {"series_id": ids, **{c: np.concatenate(parts) for c, parts in cols.items()}}
        by_id = np.argsort(ids, kind="stable")  # in the table's order, as the samples
        return pd.DataFrame({c: pd.Series(v[by_id], dtype=v.dtype) for c, v in data.items()})
