"""What accounting one flush gives the rest of the processor: one object, nothing else.

`Accountant.account` returns an `Accounted`: the usage, lifecycle, late-and-rejected and
function-load rows to write, what the health detector observes, and the counts for the
metrics. The writer writes it as it is; no caller reaches into the accountant's state.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from contracts import names as n
from contracts.quantities import COLUMNS
from contracts.wire import SampleBatch

LATE_COLUMNS = (
    "node", "sandbox_id", "tenant", "metric", "labels", "ts_ms", "value", "batch_id", "reason", "received_ms",
)  # fmt: skip
FUNCTION_LOAD_COLUMNS = (
    "tenant", "function", "sandbox_id", "node", "start_ms", "end_ms", "cpu_used_us", "vcpu_milli", "inflight",
    "batch_id",
)  # fmt: skip
INT63 = 1 << 63


class UnsafeUsage(ValueError):
    """A usage row no storage column can hold as computed (negative, or beyond int64)."""


def empty_late() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=object) for c in LATE_COLUMNS})


@dataclass(frozen=True)
class Accounted:
    usage: pd.DataFrame  # USAGE_COLUMNS, every quantity an int64 >= 0
    lifecycle: pd.DataFrame | None = None  # LIFECYCLE_COLUMNS, typed for the table
    late: pd.DataFrame = field(default_factory=empty_late)  # LATE_COLUMNS: late and rejected samples
    function_load: pd.DataFrame | None = None  # FUNCTION_LOAD_COLUMNS (usage rows that span time)
    health_input: tuple[SampleBatch, ...] = ()  # the batches as accounted, for the health detector
    samples: int = 0
    duplicates: int = 0
    clamped: int = 0
    late_samples: int = 0
    rejected: Mapping[str, int] = field(default_factory=dict)  # by reason (contracts.names.REJECT_*)
    label_conflicts: int = 0  # labels contradicting a sandbox's fixed ones (not applied)
    conflict_notes: tuple[str, ...] = ()

    @property
    def newest_ms(self) -> int | None:
        """The newest sample time accounted, for the freshness gauge."""
        ts = [int(b.ts_ms.max()) for b in self.health_input if len(b)]
        return max(ts) if ts else None


def checked_usage(usage: pd.DataFrame) -> pd.DataFrame:
    """`usage` with its quantities as int64, or UnsafeUsage: the accountant's last line before a
    row leaves it (a wrapped negative or a NaN-derived integer must never reach a UInt64)."""
    out = usage.copy()
    for c in (*COLUMNS, "start_ms", "end_ms"):
        col = out[c].to_numpy()
        if col.dtype.kind == "f":
            if not np.isfinite(col).all() or (col >= INT63).any():
                raise UnsafeUsage(f"{c}: not a finite int64")
            col = col.astype(np.int64)
        if col.size and int(col.min()) < 0:
            raise UnsafeUsage(f"{c}: negative value {int(col.min())} (an overflow or a wrapped value)")
        out[c] = col.astype(np.int64)
    if len(out) and bool((out["end_ms"] < out["start_ms"]).any()):
        raise UnsafeUsage("an interval ends before it starts")
    return out


def late_rows(
    rows: pd.DataFrame, batch_ids: Sequence[str], now_ms: int, names: Callable[[pd.DataFrame], pd.DataFrame]
) -> pd.DataFrame:
    """LATE_COLUMNS rows for the accountant's late and rejected samples (gid, key, ts, val, bidx,
    reason); `names` gives their node, sandbox, tenant, metric and labels."""
    if rows.empty:
        return empty_late()
    named = names(rows)
    ids = np.array(batch_ids, dtype=object)
    named["ts_ms"] = rows["ts"].to_numpy(np.int64).astype(np.uint64)
    named["value"] = rows["val"].to_numpy(np.float64)
    named["batch_id"] = ids[rows["bidx"].to_numpy(np.int64)]
    named["reason"] = rows["reason"].to_numpy(object) if "reason" in rows else n.LATE
    named["received_ms"] = np.full(len(rows), now_ms, np.uint64)
    return named[list(LATE_COLUMNS)].reset_index(drop=True)


def function_load(
    usage: pd.DataFrame,
    attrs: pd.DataFrame | None,
    batches: Sequence[SampleBatch],
    function_of: Callable[[Mapping[str, str], str], str],
) -> pd.DataFrame:
    """The usage rows with each sandbox's function and vCPU spec as of the row's batch (`attrs`,
    aligned with `usage`) and the in-flight requests gauge of that batch (-1 where none)."""
    if usage.empty or attrs is None:
        return pd.DataFrame(columns=list(FUNCTION_LOAD_COLUMNS))
    inflight: dict[tuple[str, str], float] = {}
    for b in batches:  # per batch and sandbox: the gauge is one series per sandbox
        if n.M_INFLIGHT in b.metrics:
            sel = b.metric == b.metrics.index(n.M_INFLIGHT)
            for e, v in zip(b.entity[sel].tolist(), b.value[sel].tolist(), strict=True):
                inflight[(b.batch_id, b.entities[e].id)] = float(v)
    sandboxes = usage["sandbox_id"].tolist()
    df = usage[["tenant", "sandbox_id", "node", "start_ms", "end_ms", "cpu_used_us"]].copy()
    df.insert(1, "function", [function_of(lb, sb) for lb, sb in zip(attrs["labels"], sandboxes, strict=True)])
    df["vcpu_milli"] = attrs["vcpu_milli"].to_numpy(np.uint32)
    df["inflight"] = np.array(
        [inflight.get(k, -1.0) for k in zip(usage["batch_id"].tolist(), sandboxes, strict=True)], np.float64
    )
    df["batch_id"] = usage["batch_id"]
    for c in ("start_ms", "end_ms", "cpu_used_us"):
        df[c] = df[c].astype(np.uint64)
    return df[df["end_ms"] > df["start_ms"]].reset_index(drop=True)


def merged(parts: Sequence[Accounted], empty: Accounted) -> Accounted:
    """The results of consecutive batches accounted one by one, as one (`empty` when none)."""
    if not parts:
        return empty
    if len(parts) == 1:
        return parts[0]

    def cat(frames: list[pd.DataFrame | None]) -> pd.DataFrame | None:
        have = [f for f in frames if f is not None]
        return pd.concat([f for f in have if len(f)] or have[:1], ignore_index=True) if have else None

    rejected: dict[str, int] = {}
    for p in parts:
        for k, v in p.rejected.items():
            rejected[k] = rejected.get(k, 0) + v
    return Accounted(
        usage=pd.concat([p.usage for p in parts], ignore_index=True),
        lifecycle=cat([p.lifecycle for p in parts]),
        late=pd.concat([p.late for p in parts], ignore_index=True),
        function_load=cat([p.function_load for p in parts]),
        health_input=tuple(b for p in parts for b in p.health_input),
        samples=sum(p.samples for p in parts),
        duplicates=sum(p.duplicates for p in parts),
        clamped=sum(p.clamped for p in parts),
        late_samples=sum(p.late_samples for p in parts),
        rejected=rejected,
        label_conflicts=sum(p.label_conflicts for p in parts),
        conflict_notes=tuple(x for p in parts for x in p.conflict_notes),
    )
