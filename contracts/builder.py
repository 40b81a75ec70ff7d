"""Accumulates one scrape's samples into a wire-format SampleBatch."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import numpy.typing as npt

from contracts.wire import Entity, EventKind, SampleBatch

HOST = 0  # entity index of the node itself


class BatchBuilder:
    """Interns entities, metric names and sub-label strings; keeps plain int/float lists.

    `add_many` takes whole columns from a source, so a source that parsed a file with
    numpy or a regex never loops per sample here.
    """

    def __init__(self, node: str, host_labels: Mapping[str, str] | None = None) -> None:
        self.node = node
        self._entities: list[Entity] = [Entity("", dict(host_labels or {}))]
        self._entity_ix: dict[str, int] = {"": HOST}
        self._metric_ix: dict[str, int] = {}
        self._sub_ix: dict[str, int] = {}
        self._entity: list[int] = []
        self._metric: list[int] = []
        self._sub: list[int] = []
        self._ts: list[int] = []
        self._value: list[float] = []
        self._events: list[tuple[int, int, int]] = []
        self._chunks: list[tuple[npt.NDArray[np.int64], ...]] = []  # (entity, metric, sub, ts) columns
        self._chunk_values: list[npt.NDArray[np.float64]] = []

    def entity(self, sandbox_id: str, labels: Mapping[str, str]) -> int:
        ix = self._entity_ix.get(sandbox_id)
        if ix is None:
            ix = self._entity_ix[sandbox_id] = len(self._entities)
            self._entities.append(Entity(sandbox_id, dict(labels)))
        return ix

    def entity_index(self, sandbox_id: str) -> int | None:
        return self._entity_ix.get(sandbox_id)

    def metric_ix(self, name: str) -> int:
        return self._metric_ix.setdefault(name, len(self._metric_ix))

    def sub_ix(self, sub: str) -> int:
        return self._sub_ix.setdefault(sub, len(self._sub_ix))

    def add(self, entity: int, metric: str, sub: str, ts_ms: int, value: float) -> None:
        self._entity.append(entity)
        self._metric.append(self.metric_ix(metric))
        self._sub.append(self.sub_ix(sub))
        self._ts.append(ts_ms)
        self._value.append(value)

    def add_many(self, entity: int, metric: str, subs: Iterable[str], ts_ms: int, values: Iterable[float]) -> None:
        m = self.metric_ix(metric)
        sub_ix = [self.sub_ix(s) for s in subs]
        vals = list(values)
        if len(sub_ix) != len(vals):
            raise ValueError("subs and values differ in length")
        k = len(vals)
        self._entity.extend([entity] * k)
        self._metric.extend([m] * k)
        self._sub.extend(sub_ix)
        self._ts.extend([ts_ms] * k)
        self._value.extend(vals)

    def add_columns(
        self,
        entity: npt.NDArray[np.int64],
        metrics: Sequence[str],
        metric: npt.NDArray[np.int64],
        subs: Sequence[str],
        sub: npt.NDArray[np.int64],
        ts_ms: int,
        values: npt.NDArray[np.float64],
    ) -> None:
        """Samples in columns: `metric` and `sub` index the tables `metrics` and `subs`; only
        the table entries used are interned (per distinct name, never per sample)."""
        if not values.shape[0]:
            return
        # the table entries used, in table order: a count per entry, no sort of the column
        m_map = np.zeros(len(metrics), np.int64)
        for i in np.flatnonzero(np.bincount(metric, minlength=len(metrics))).tolist():
            m_map[i] = self.metric_ix(metrics[i])
        s_map = np.zeros(len(subs), np.int64)
        for i in np.flatnonzero(np.bincount(sub, minlength=len(subs))).tolist():
            s_map[i] = self.sub_ix(subs[i])
        ts = np.full(values.shape[0], ts_ms, np.int64)
        self._chunks.append((entity.astype(np.int64), m_map[metric], s_map[sub], ts))
        self._chunk_values.append(values.astype(np.float64))

    def event(self, entity: int, kind: EventKind, ts_ms: int) -> None:
        self._events.append((entity, int(kind), ts_ms))

    def __len__(self) -> int:
        return len(self._value) + sum(int(v.shape[0]) for v in self._chunk_values)

    def _column(self, i: int, listed: list[int]) -> npt.NDArray[np.int64]:
        return np.concatenate([np.array(listed, np.int64), *(c[i] for c in self._chunks)])

    def build(self, boot_epoch_ms: int, seq: int, scrape_ts_ms: int) -> SampleBatch:
        ev = np.array(self._events, dtype=np.int64).reshape(-1, 3)
        return SampleBatch(
            node=self.node,
            boot_epoch_ms=boot_epoch_ms,
            seq=seq,
            scrape_ts_ms=scrape_ts_ms,
            entities=tuple(self._entities),
            metrics=tuple(self._metric_ix),
            subs=tuple(self._sub_ix),
            entity=self._column(0, self._entity).astype(np.uint16),
            metric=self._column(1, self._metric).astype(np.uint16),
            sub=self._column(2, self._sub).astype(np.uint16),
            ts_ms=self._column(3, self._ts),
            value=np.concatenate([np.array(self._value, np.float64), *self._chunk_values]),
            ev_entity=ev[:, 0].astype(np.uint16),
            ev_kind=ev[:, 1].astype(np.uint8),
            ev_ts_ms=ev[:, 2].astype(np.int64),
        )
