"""Processor checkpoints: accounting state and consumer offsets, per partition, in ClickHouse.

A checkpoint is written after the flush it follows has been written, and before offsets
are committed to Kafka; on assignment a processor loads each partition's newest checkpoint
and seeks to its offset. A crash between a flush and its checkpoint replays batches whose
rows are already stored: the restored state is the one those rows were computed from, so
the replay writes identical rows, which storage and queries deduplicate.

The state travels as an `.npz` of plain columns (no pickle), zstd-compressed, base64 in a
String column, readable by any processor instance whatever it interned.
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import zstandard

from pipeline.accounting import SANDBOX_COLUMNS, SERIES_COLUMNS, StateFrames

_STR_COLS = {"node", "sandbox_id", "tenant", "labels", "metric", "sub"}


@dataclass(frozen=True)
class Checkpoint:
    topic: str
    partition: int
    offset: int  # the next offset to read
    saved_ms: int
    state: StateFrames
    health: str = ""  # HealthDetector.export() of the partition's nodes


def encode_state(state: StateFrames) -> str:
    arrays: dict[str, Any] = {}
    for prefix, df, cols in (("sb", state.sandboxes, SANDBOX_COLUMNS), ("se", state.series, SERIES_COLUMNS)):
        for c in cols:
            v = df[c].to_numpy()
            arrays[f"{prefix}.{c}"] = (
                v.astype(str) if c in _STR_COLS else v.astype(np.float64 if c == "val" else np.int64)
            )
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return base64.b64encode(zstandard.ZstdCompressor(level=3).compress(buf.getvalue())).decode()


def decode_state(text: str) -> StateFrames:
    raw = zstandard.ZstdDecompressor().decompress(base64.b64decode(text))
    with np.load(io.BytesIO(raw), allow_pickle=False) as z:
        # a checkpoint from before a column was added has none: -1 is "not known"
        rows = len(z["sb.node"])
        sb = pd.DataFrame({c: z[f"sb.{c}"] if f"sb.{c}" in z else np.full(rows, -1, np.int64) for c in SANDBOX_COLUMNS})
        se = pd.DataFrame({c: z[f"se.{c}"] for c in SERIES_COLUMNS})
    sb["stopped"] = sb["stopped"].astype(bool)
    return StateFrames(sb, se)
