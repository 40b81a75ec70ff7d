"""Validate: a decoded batch is checked before anything is accounted from it.

Whole batch (dead-lettered, the original record kept): more than `max_samples` samples is
`too_large`; a scrape, sample or event time outside [now - max age, now + clock skew] is
`bad_timestamp` (a node's clock is wrong, or the batch is older than anything still kept: its
raw day would be dropped, its usage belongs to a closed period).

Per sample (the batch is accounted without them; they go to `late_samples` with the reason
and are counted): NaN or +-Inf in any metric is `not_finite`; a billed metric (the counters,
the memory gauge, the spec) below 0 is `negative`; a billed value beyond what a sandbox can
have is `out_of_range` (a spec above `max_sandbox_cpus` or `max_memory_bytes`, memory above
the latter, a counter above 2^53, where a float stops counting in ones). The batch rather than
the sample is refused only for what says the whole batch is wrong; one bad reading of one
sandbox does not cost a node its scrape. The stateful checks (a counter that fell or rose
impossibly) run in the accountant (`screen.py`), which knows each series' last value.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pandas as pd

from contracts import names as n
from contracts.wire import SampleBatch
from pipeline.accounted import LATE_COLUMNS
from pipeline.accounting import BILLED_METRICS
from pipeline.deadletter import DeadLetters
from pipeline.decode import Refused
from pipeline.steps import Item, Outbox, Relay, Step

MAX_COUNT = float(1 << 53)
_CODES = (n.REJECT_NOT_FINITE, n.REJECT_NEGATIVE, n.REJECT_OUT_OF_RANGE)  # 1, 2, 3 below


@dataclass(frozen=True)
class Rules:
    max_age_ms: int
    max_skew_ms: int
    max_samples: int
    max_sandbox_cpus: float
    max_memory_bytes: int


def _utc(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ms / 1000)) if 0 <= ms < 253402300800000 else "?"


def _check_times(b: SampleBatch, now_ms: int, r: Rules) -> None:
    lo, hi = now_ms - r.max_age_ms, now_ms + r.max_skew_ms
    for what, arr in (("scrape", np.array([b.scrape_ts_ms])), ("sample", b.ts_ms), ("event", b.ev_ts_ms)):
        if not arr.size:
            continue
        first, last = int(arr.min()), int(arr.max())
        if first < lo:
            raise Refused(
                n.DLQ_BAD_TIMESTAMP, f"{what} time {first} ({_utc(first)}) older than now - {r.max_age_ms // 1000} s"
            )
        if last > hi:
            raise Refused(
                n.DLQ_BAD_TIMESTAMP, f"{what} time {last} ({_utc(last)}) after now + {r.max_skew_ms // 1000} s"
            )


@functools.lru_cache(maxsize=4096)
def _tables(metrics: tuple[str, ...], r: Rules) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.float64]]:
    """Per metric of a batch's table: is it billed, and the largest value it may have. A node's
    batches share their table (the decoder keeps it), so this runs once per layout."""
    top = {n.M_SPEC_VCPU_MILLI: r.max_sandbox_cpus * 1000, n.M_SPEC_MEM_BYTES: r.max_memory_bytes}
    top[n.M_CG_MEM_CURRENT] = r.max_memory_bytes
    billed = np.array([m in BILLED_METRICS for m in metrics], bool)
    return billed, np.array([top.get(m, MAX_COUNT) for m in metrics], np.float64)


def _limits(b: SampleBatch, r: Rules) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.float64]]:
    """Per sample of `b`: is its metric billed, and the largest value it may have."""
    billed, upper = _tables(tuple(b.metrics), r)
    return billed[b.metric], upper[b.metric]


def checked(b: SampleBatch, now_ms: int, r: Rules) -> tuple[SampleBatch, pd.DataFrame | None]:
    """`b` without the samples it may not bill, and those as late_samples rows; or Refused."""
    if len(b) > r.max_samples:
        raise Refused(n.DLQ_TOO_LARGE, f"{len(b)} samples, more than {r.max_samples}")
    _check_times(b, now_ms, r)
    v = b.value
    finite = np.isfinite(v)
    billed, upper = _limits(b, r)
    code = np.zeros(len(b), np.uint8)
    code[billed & (v > upper)] = 3
    code[billed & (v < 0)] = 2
    code[~finite] = 1
    if not code.any():
        return b, None
    bad = code > 0
    return _without(b, ~bad), _rows(b, bad, code[bad], now_ms)


def _without(b: SampleBatch, keep: npt.NDArray[np.bool_]) -> SampleBatch:
    return dataclasses.replace(
        b, entity=b.entity[keep], metric=b.metric[keep], sub=b.sub[keep], ts_ms=b.ts_ms[keep], value=b.value[keep]
    )


def _rows(b: SampleBatch, bad: npt.NDArray[np.bool_], code: npt.NDArray[np.uint8], now_ms: int) -> pd.DataFrame:
    ents = b.entities
    ids = np.array([e.id for e in ents], dtype=object)
    tenants = np.array([e.labels.get("tenant", n.UNATTRIBUTED) for e in ents], dtype=object)
    e = b.entity[bad]
    df = pd.DataFrame(
        {
            "node": b.node,
            "sandbox_id": ids[e],
            "tenant": tenants[e],
            "metric": np.array(b.metrics, dtype=object)[b.metric[bad]],
            "labels": np.array(b.subs, dtype=object)[b.sub[bad]],
            "ts_ms": b.ts_ms[bad].astype(np.uint64),
            "value": b.value[bad],
            "batch_id": b.batch_id,
            "reason": np.array(_CODES, dtype=object)[code - 1],
            "received_ms": np.full(int(bad.sum()), now_ms, np.uint64),
        }
    )
    return df[list(LATE_COLUMNS)]


class ValidateStep(Relay[Item]):
    def __init__(
        self, next_step: Step[Item], deadletters: DeadLetters, rules: Rules, clock_ms: Callable[[], int]
    ) -> None:
        self.out = Outbox(next_step)
        self.dlq = deadletters
        self.rules = rules
        self.clock_ms = clock_ms

    def submit(self, item: Item) -> None:
        self.out.ready()
        if item.batch is not None:
            try:
                item.clean, item.rejected = checked(item.batch, self.clock_ms(), self.rules)
            except Refused as r:
                self.dlq.send(item.record, r.reason, r.detail)
                item.batch = None
            except Exception as exc:  # confined to this batch
                self.dlq.send(item.record, n.DLQ_PROCESSING_ERROR, f"validation: {type(exc).__name__}: {exc}")
                item.batch = None
        self.out.put(item)
