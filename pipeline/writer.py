"""Writes accounting results to ClickHouse; a write either succeeds whole or raises.

With a second connection (`raw_ch`), the raw samples of a flush are inserted on a thread of
their own while the processor goes on with the next flush: the server sorts and writes them
while this process decodes and accounts. At most one such insert is in flight; `settle()`
waits for it (the next write and every checkpoint call it first), so nothing is checkpointed
before ClickHouse has it. A failed raw insert stays pending and is retried by the next
`settle()`, on the caller's thread.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np
import pandas as pd

from contracts import names as n
from contracts.settings import ClickHousePart
from contracts.wire import SampleBatch
from pipeline import shards
from pipeline.accounting import LIFECYCLE_COLUMNS, USAGE_COLUMNS, Result
from pipeline.checkpoint import Checkpoint, decode_state, encode_state
from pipeline.health import HealthEvent
from pipeline.rawstore import RawSeries
from pipeline.rollup import rollup_statements


class WriteError(RuntimeError):
    """ClickHouse did not take the write; the caller retries the identical block."""


def open_writer(s: ClickHousePart, keep_raw: bool) -> ClickHouseWriter:
    """The processor's writer: with raw samples on, a second connection inserts them."""
    raw_ch = s.clickhouse() if keep_raw else None
    return ClickHouseWriter(s.clickhouse(), keep_raw, raw_ch=raw_ch, cluster=s.clickhouse_cluster)


class ClickHouseWriter:
    def __init__(self, ch: Any, keep_raw: bool = True, raw_ch: Any = None, cluster: str = "") -> None:
        self.ch = ch
        self.cluster = cluster  # retention drops the partitions of this cluster's local tables
        self.keep_raw = keep_raw
        self.raw = RawSeries()
        self._raw_ch = raw_ch  # a connection of the raw thread's own: a client is not thread-safe
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="raw-writer") if raw_ch is not None else None
        self._raw_job: tuple[pd.DataFrame, pd.DataFrame] | None = None  # (samples, names) not yet durable
        self._raw_future: Future[None] | None = None

    def _insert(self, table: str, df: pd.DataFrame, ch: Any = None) -> None:
        if df.empty:
            return
        cols = ", ".join(df.columns)
        try:
            (self.ch if ch is None else ch).insert_dataframe(f"INSERT INTO {table} ({cols}) VALUES", df)
        except Exception as exc:
            raise WriteError(f"insert into {table} ({len(df)} rows): {exc}") from exc

    def _write_raw(self, ch: Any, samples: pd.DataFrame, named: pd.DataFrame) -> None:
        self._insert(n.T_RAW_SERIES, named, ch)  # names first: a reader never meets an unnamed id
        self._insert(n.T_SAMPLES, samples, ch)

    def settle(self) -> None:
        """Returns once every raw sample handed to `write` is in ClickHouse, or raises
        WriteError and keeps the pending ones for the next call."""
        if self._raw_job is None:
            return
        if self._raw_future is not None:
            fut, self._raw_future = self._raw_future, None
            fut.result()  # a WriteError leaves the job pending: written below on the next call
        else:
            self._write_raw(self.ch, *self._raw_job)
        self._raw_job = None

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)

    def write(
        self,
        batches: Sequence[SampleBatch],
        result: Result,
        now_ms: int,
        late: pd.DataFrame | None = None,
        function_load: pd.DataFrame | None = None,
    ) -> None:
        self.settle()  # the previous flush's raw samples; on a retry, the failed ones
        if self.keep_raw:
            # framed once: the names of new series are handed over only here (a retried write
            # frames again and finds them named, but the pending job still carries them)
            self._raw_job = self.raw.frames(batches)
            if self._pool is not None:
                self._raw_future = self._pool.submit(self._write_raw, self._raw_ch, *self._raw_job)
            else:
                self.settle()
        usage = result.usage[list(USAGE_COLUMNS)].copy()
        for c in USAGE_COLUMNS:
            if c not in ("tenant", "sandbox_id", "node", "batch_id"):
                usage[c] = usage[c].astype(np.uint64)
        self._insert(n.T_USAGE, usage)
        if result.lifecycle:
            life = pd.DataFrame(result.lifecycle, columns=list(LIFECYCLE_COLUMNS)).astype(
                {"ts_ms": np.uint64, "vcpu_millicores": np.uint32, "memory_bytes": np.uint64}
            )
            self._insert(n.T_LIFECYCLE, life)
        if late is not None:
            self._insert(n.T_LATE, late)
        if function_load is not None:
            self._insert(n.T_FUNCTION_LOAD, function_load)

    def roll(self, dirty: dict[str, tuple[int, int]]) -> None:
        """Recomputes the minute and hour rollups of these tenants' minute ranges."""
        for sql, params in rollup_statements(dirty):
            try:
                self.ch.execute(sql, params)
            except Exception as exc:
                raise WriteError(f"rollup of {len(dirty)} tenants: {exc}") from exc

    def drop_days_before(self, table: str, day: int) -> list[str]:
        """Drops `table`'s day partitions (YYYYMMDD) older than `day`; returns them."""
        try:
            old = shards.old_day_partitions(self.ch, table, day, self.cluster)
            for part in old:
                shards.drop_partition(self.ch, table, int(part), self.cluster)
        except Exception as exc:
            raise WriteError(f"retention of {table}: {exc}") from exc
        return old

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
                f"SELECT partition, offset, saved_ms, state, health FROM {n.T_CHECKPOINTS} "
                "WHERE topic = %(topic)s AND partition IN %(parts)s "
                "ORDER BY partition, offset DESC LIMIT 1 BY partition",
                {"topic": topic, "parts": tuple(int(p) for p in partitions)},
            )
        except Exception as exc:
            raise WriteError(f"reading checkpoints: {exc}") from exc
        return {
            int(p): Checkpoint(topic, int(p), int(o), int(t), decode_state(str(st)), str(h)) for p, o, t, st, h in rows
        }

    def write_health(self, events: Sequence[HealthEvent]) -> None:
        if not events:
            return
        df = pd.DataFrame(
            {
                "kind": [e.kind for e in events],
                "event": [e.event for e in events],
                "node": [e.node for e in events],
                "sandbox_id": [e.sandbox_id for e in events],
                "tenant": [e.tenant for e in events],
                "ts_ms": np.array([e.ts_ms for e in events], np.uint64),
                "opened_ms": np.array([e.opened_ms for e in events], np.uint64),
                "incident_id": [e.incident_id for e in events],
                "evidence": [json.dumps(e.evidence, sort_keys=True, default=str) for e in events],
            }
        )
        self._insert(n.T_HEALTH, df)
