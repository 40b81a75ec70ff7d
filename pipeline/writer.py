"""Writes accounting results to ClickHouse; a write either succeeds whole or raises.

A flush's rows are `prepare`d once into a `Pending` (raw sample frames included: naming new
series happens only there) and `write` inserts the parts not yet done, so a retry after a
failure repeats nothing that already succeeded (late_samples is a plain MergeTree). With a
second connection (`raw_ch`), the raw samples go in on a thread of their own while the other
tables are written on this one. Every call runs on the processor's ClickHouse worker thread,
never on its main loop (worker.py).

Defence in depth: a usage row whose quantities a UInt64 column cannot hold as they are
(negative, NaN, 2^63 or more) is never inserted; the accountant already refuses to make one,
so such a row means a bug: it is logged as an error and left out, never wrapped.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from contracts import names as n
from contracts.clickhouse import tables
from contracts.quantities import COLUMNS
from contracts.settings import ClickHousePart
from contracts.wire import SampleBatch
from pipeline.accounted import Accounted
from pipeline.checkpoint import Checkpoint, decode_state, encode_state
from pipeline.health import HealthEvent
from pipeline.rawstore import RawSeries
from pipeline.rollup import rollup_statements
from pipeline.worker import Worker

log = logging.getLogger(__name__)
_INT63 = float(1 << 63)


class WriteError(RuntimeError):
    """ClickHouse did not take the write; the caller retries the identical block."""


def open_writer(s: ClickHousePart, keep_raw: bool) -> ClickHouseWriter:
    """The processor's writer: with raw samples on, a second connection inserts them."""
    raw_ch = s.clickhouse() if keep_raw else None
    return ClickHouseWriter(s.clickhouse(), keep_raw, raw_ch=raw_ch, cluster=s.clickhouse_cluster)


@dataclass
class Pending:
    """One flush's inserts, (table, rows) in order; `done` holds the tables already written."""

    parts: list[tuple[str, pd.DataFrame]]
    raw: list[tuple[str, pd.DataFrame]]  # raw_series, then raw_samples: a reader never meets an unnamed id
    done: set[str] = field(default_factory=set)


def storable_usage(usage: pd.DataFrame) -> pd.DataFrame:
    """The usage rows as UInt64 columns, without (and logging) any row a UInt64 cannot hold."""
    out = usage.copy()
    ok = np.ones(len(out), bool)
    for c in (*COLUMNS, "start_ms", "end_ms"):
        v = out[c].to_numpy(np.float64)
        ok &= np.isfinite(v) & (v >= 0) & (v < _INT63)
    if not ok.all():
        bad = out[~ok]
        log.error(
            "refusing %d usage rows with values no UInt64 column may hold (a bug upstream), e.g. %s",
            len(bad), bad.head(3).to_dict("records"),
        )  # fmt: skip
        out = out[ok]
    for c in (*COLUMNS, "start_ms", "end_ms"):
        out[c] = out[c].astype(np.int64).astype(np.uint64)
    return out


def health_frame(events: Sequence[HealthEvent]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "kind": [e.kind for e in events],
            "event": [e.event for e in events],
            "node": [e.node for e in events],
            "sandbox_id": [e.sandbox_id for e in events],
            "tenant": [e.tenant for e in events],
            "disk": [e.disk for e in events],
            "ts_ms": np.array([e.ts_ms for e in events], np.uint64),
            "opened_ms": np.array([e.opened_ms for e in events], np.uint64),
            "incident_id": [e.incident_id for e in events],
            "evidence": [json.dumps(e.evidence, sort_keys=True, default=str) for e in events],
        }
    )


class ClickHouseWriter:
    def __init__(self, ch: Any, keep_raw: bool = True, raw_ch: Any = None, cluster: str = "") -> None:
        self.ch = ch
        self.cluster = cluster  # retention drops the partitions of this cluster's local tables
        self.keep_raw = keep_raw
        self.raw = RawSeries()
        self._raw_ch = raw_ch  # a connection of the raw thread's own: a client is not thread-safe
        self._raw_worker = Worker("raw-writer") if raw_ch is not None else None

    def close(self) -> None:
        if self._raw_worker is not None:
            self._raw_worker.close()

    def _insert(self, table: str, df: pd.DataFrame, ch: Any = None) -> None:
        if df.empty:
            return
        cols = ", ".join(df.columns)
        ch = self.ch if ch is None else ch
        try:
            ch.insert_dataframe(f"INSERT INTO {tables(ch)(table)} ({cols}) VALUES", df)
        except Exception as exc:
            raise WriteError(f"insert into {table} ({len(df)} rows): {exc}") from exc

    def prepare(self, rows: Accounted, raw: Sequence[SampleBatch] = (), events: Sequence[HealthEvent] = ()) -> Pending:
        """The inserts of one flush. Raw samples are framed here, once: the names of series new to
        this process are handed over only now, so a retry must reuse this Pending."""
        parts = [(n.T_USAGE, storable_usage(rows.usage))]
        if rows.lifecycle is not None:
            parts.append((n.T_LIFECYCLE, rows.lifecycle))
        parts.append((n.T_LATE, rows.late))
        if rows.function_load is not None:
            parts.append((n.T_FUNCTION_LOAD, rows.function_load))
        if events:
            parts.append((n.T_HEALTH, health_frame(events)))
        samples_named = self.raw.frames(raw) if self.keep_raw and raw else None
        raw_parts = [(n.T_RAW_SERIES, samples_named[1]), (n.T_SAMPLES, samples_named[0])] if samples_named else []
        return Pending(parts, raw_parts)

    def _write_raw(self, p: Pending, ch: Any) -> None:
        for table, df in p.raw:
            if table not in p.done:
                self._insert(table, df, ch)
                p.done.add(table)

    def write(self, p: Pending) -> None:
        """Inserts what `p` has not written yet; raises WriteError (and may be called again)."""
        raw_job = None
        if self._raw_worker is not None and p.raw:
            raw_job = self._raw_worker.run(lambda: self._write_raw(p, self._raw_ch))
        else:
            self._write_raw(p, self.ch)
        try:
            for table, df in p.parts:
                if table not in p.done:
                    self._insert(table, df)
                    p.done.add(table)
        finally:
            if raw_job is not None:
                raw_job.wait()  # the raw thread's WriteError is this write's

    def roll(self, dirty: dict[str, tuple[int, int]]) -> None:
        """Recomputes the minute and hour rollups of these tenants' minute ranges."""
        for sql, params in rollup_statements(tables(self.ch), dirty):
            try:
                self.ch.execute(sql, params)
            except Exception as exc:
                raise WriteError(f"rollup of {len(dirty)} tenants: {exc}") from exc

    def save_checkpoints(self, cps: Sequence[Checkpoint]) -> None:
        df = pd.DataFrame(
            {
                "topic": [c.topic for c in cps],
                "partition": np.array([c.partition for c in cps], np.uint32),
                "offset": np.array([c.offset for c in cps], np.uint64),
                "saved_ms": np.array([c.saved_ms for c in cps], np.uint64),
                "series": np.array([len(c.state.series) for c in cps], np.uint64),
                "state": [encode_state(c.state) for c in cps],
                "health": [c.health for c in cps],
            }
        )
        self._insert(n.T_CHECKPOINTS, df)

    def load_checkpoints(self, topic: str, partitions: Sequence[int]) -> dict[int, Checkpoint]:
        """The newest checkpoint of each of `partitions` that has one."""
        if not partitions:
            return {}
        try:
            rows = self.ch.execute(
                f"SELECT partition, offset, saved_ms, state, health FROM {tables(self.ch).checkpoints} "
                "WHERE topic = %(topic)s AND partition IN %(parts)s "
                "ORDER BY partition, offset DESC LIMIT 1 BY partition",
                {"topic": topic, "parts": tuple(int(p) for p in partitions)},
            )
        except Exception as exc:
            raise WriteError(f"reading checkpoints: {exc}") from exc
        return {
            int(p): Checkpoint(topic, int(p), int(o), int(t), decode_state(str(st)), str(h)) for p, o, t, st, h in rows
        }
