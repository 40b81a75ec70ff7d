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
import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import zstandard

from pipeline.accounting import SANDBOX_COLUMNS, SERIES_COLUMNS, StateFrames, no_gc

_STR_COLS = {"node", "sandbox_id", "tenant", "labels", "metric", "sub"}
# series name columns are written as codes into a table of their distinct names
_CODED = ("node", "sandbox_id", "metric", "sub")


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
    sb = state.sandboxes
    for c in SANDBOX_COLUMNS:
        if c == "labels":  # one JSON document for every sandbox's labels: one encoder call
            text = json.dumps(sb[c].tolist(), sort_keys=True, separators=(",", ":"))
            arrays["sb.labels_json"] = np.frombuffer(text.encode(), np.uint8)
            continue
        v = sb[c].to_numpy()
        arrays[f"sb.{c}"] = v.astype(str) if c in _STR_COLS else v.astype(np.int64)
    se = state.series
    for c in SERIES_COLUMNS:
        if c in _CODED:
            col = se[c].astype("category") if len(se) else pd.Categorical(np.zeros(0, str))
            cat = col.array if isinstance(col, pd.Series) else col
            assert isinstance(cat, pd.Categorical)
            arrays[f"se.{c}.names"] = np.asarray(cat.categories, dtype=object).astype(str)
            arrays[f"se.{c}.codes"] = np.asarray(cat.codes, np.int32)
        else:
            arrays[f"se.{c}"] = se[c].to_numpy().astype(np.float64 if c == "val" else np.int64)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return base64.b64encode(zstandard.ZstdCompressor(level=3).compress(buf.getvalue())).decode()


def decode_state(text: str) -> StateFrames:
    """The state of a checkpoint, also one written before names were coded (one string per row)."""
    raw = zstandard.ZstdDecompressor().decompress(base64.b64decode(text))
    with np.load(io.BytesIO(raw), allow_pickle=False) as z:
        # a checkpoint from before a column was added has none: -1 is "not known"
        rows = len(z["sb.node"])
        sb = pd.DataFrame(
            {c: z[f"sb.{c}"] if f"sb.{c}" in z else np.full(rows, -1, np.int64) for c in SANDBOX_COLUMNS[4:]}
        )
        for i, c in enumerate(SANDBOX_COLUMNS[:3]):
            sb.insert(i, c, z[f"sb.{c}"])
        with no_gc():  # a dict per sandbox
            if "sb.labels_json" in z:
                labels = json.loads(z["sb.labels_json"].tobytes())
            else:
                labels = [json.loads(x) for x in z["sb.labels"]]
        sb.insert(SANDBOX_COLUMNS.index("labels"), "labels", pd.Series(labels, dtype=object))
        se = pd.DataFrame(
            {
                c: pd.Categorical.from_codes(z[f"se.{c}.codes"], categories=z[f"se.{c}.names"])
                if f"se.{c}.codes" in z
                else z[f"se.{c}"]
                for c in SERIES_COLUMNS
            }
        )
    sb["stopped"] = sb["stopped"].astype(bool)
    return StateFrames(sb, se)
