"""Per-series state (last timestamp and value), looked up for whole batches at once."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
import pandas as pd

U64 = npt.NDArray[np.uint64]
I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]


class SeriesState:
    """Series key (uint64) -> (last_ts_ms, last_value), in flat arrays behind a hash index.

    `lookup` is one vectorized hash probe per batch; new keys extend the arrays and
    rebuild the index, which only happens while new series appear.
    """

    def __init__(self) -> None:
        self._index = pd.Index(np.zeros(0, np.uint64))
        self.ts: I64 = np.zeros(0, np.int64)
        self.val: F64 = np.zeros(0, np.float64)

    def __len__(self) -> int:
        return int(self.ts.shape[0])

    def copy(self) -> SeriesState:
        out = SeriesState()
        out._index, out.ts, out.val = self._index, self.ts.copy(), self.val.copy()
        return out

    def lookup(self, keys: U64) -> npt.NDArray[np.intp]:
        """Slots of `keys`, -1 for unknown ones."""
        if not len(self._index):
            return np.full(keys.shape[0], -1, np.intp)
        return np.asarray(self._index.get_indexer(pd.Index(keys)), np.intp)

    def keys(self) -> U64:
        """The series keys, slot by slot."""
        return np.asarray(self._index.to_numpy(), np.uint64)

    def take_ts(self, slots: npt.NDArray[np.intp]) -> I64:
        """Last timestamps at `slots`; -1 where the slot is -1 (unknown series)."""
        if not len(self):
            return np.full(slots.shape[0], -1, np.int64)
        return np.where(slots >= 0, self.ts[np.maximum(slots, 0)], -1)

    def take_val(self, slots: npt.NDArray[np.intp]) -> F64:
        if not len(self):
            return np.full(slots.shape[0], np.nan)
        return np.where(slots >= 0, self.val[np.maximum(slots, 0)], np.nan)

    def update(self, keys: U64, ts: I64, val: F64) -> None:
        """Sets the state of unique `keys` (adding unknown ones)."""
        slots = self.lookup(keys)
        new = slots < 0
        if new.any():
            start = len(self)
            self._index = self._index.append(pd.Index(keys[new]))
            self.ts = np.concatenate([self.ts, np.zeros(int(new.sum()), np.int64)])
            self.val = np.concatenate([self.val, np.zeros(int(new.sum()), np.float64)])
            slots[new] = np.arange(start, len(self))
        self.ts[slots] = ts
        self.val[slots] = val

    def nbytes(self) -> int:
        return int(self.ts.nbytes + self.val.nbytes + self._index.memory_usage(deep=True))


@dataclass(slots=True)
class SandboxState:
    gid: int
    node: str
    sandbox_id: str
    tenant: str
    labels: dict[str, str] = field(default_factory=dict)
    vcpu_milli: int = 0
    mem_max: int = 0
    start_ms: int | None = None
    alloc_cursor: int | None = None  # allocated capacity is billed up to here
    stopped: bool = False
    stop_ms: int | None = None  # the first stop seen: gauge integrals end here
