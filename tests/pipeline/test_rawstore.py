"""Raw samples as (series id, ts, value): stable ids, names written once, real round trip."""

from __future__ import annotations

from typing import Any

import pytest

from contracts import names as n
from contracts.builder import BatchBuilder
from contracts.clickhouse import tables
from contracts.wire import SampleBatch
from pipeline import shards
from pipeline.accounted import Accounted
from pipeline.rawstore import RawSeries
from pipeline.writer import ClickHouseWriter, WriteError
from sandmeter.stack import Stack
from sandmeter.stack.users import WRITER

DAY_MS = 86_400_000
T0 = 1_790_000_000_000 // DAY_MS * DAY_MS


def scrape(node: str, ts: int, order: tuple[str, ...] = ("a", "b"), host: bool = False) -> SampleBatch:
    b = BatchBuilder(node, {"kernel": "6.1"})
    if host:
        b.add(0, "host_load1", "", ts, 0.5)
    for sb in order:
        e = b.entity(sb, {"tenant": f"t-{sb}"})
        b.add(e, n.M_CG_CPU_USAGE_US, "", ts, 100.0)
        b.add(e, n.M_CG_PRESSURE, 'resource="io",kind="full",item="avg10"', ts, 1.5)
    return b.build(1, 0, ts)


def test_a_series_id_depends_on_its_names_only() -> None:
    r1, r2 = RawSeries(), RawSeries()
    x = r1.ids(scrape("n1", T0))
    y = r2.ids(scrape("n1", T0 + 5000, order=("b", "a"), host=True))  # other interning order, other batch
    assert sorted(x.tolist()) == sorted(y[1:].tolist())  # same four series, same ids
    assert len(set(x.tolist())) == 4
    assert set(r1.ids(scrape("n2", T0)).tolist()).isdisjoint(x.tolist())  # another node, other series


def test_only_series_new_to_the_process_are_named() -> None:
    r = RawSeries()
    samples, named = r.frames([scrape("n1", T0), scrape("n1", T0 + 5000)])
    assert len(samples) == 8 and len(named) == 4
    row = named[(named.sandbox_id == "b") & (named.metric == n.M_CG_PRESSURE)].iloc[0]
    assert (row.node, row.tenant, row.labels, int(row.first_ms)) == (
        "n1",
        "t-b",
        'resource="io",kind="full",item="avg10"',
        T0,
    )
    batches = [scrape("n2", T0), scrape("n3", T0, order=("c",))]
    _, named = r.frames(batches)  # two batches, every series new: each row carries its own id
    for b in batches:
        for sid, e, m in zip(r.ids(b).tolist(), b.entity.tolist(), b.metric.tolist(), strict=True):
            row = named[named.series_id == sid].iloc[0]
            assert (row.node, row.sandbox_id, row.metric) == (b.node, b.entities[e].id, b.metrics[m])
    _, named = r.frames([scrape("n1", T0 + 10_000, host=True)])
    assert named.metric.tolist() == ["host_load1"] and named.sandbox_id.tolist() == [""]


@pytest.mark.clickhouse
def test_raw_samples_round_trip_and_old_days_are_dropped(db: tuple[str, Any]) -> None:
    _, ch = db
    w = ClickHouseWriter(ch, keep_raw=True)
    empty = Accounted(usage=pd_empty())
    for day in range(3):
        w.write(w.prepare(empty, [scrape("n1", T0 + day * DAY_MS + 1000)]))
    w.write(w.prepare(empty, [scrape("n1", T0 + 2 * DAY_MS + 6000)]))  # known series: no new names
    assert int(ch.execute(f"SELECT count() FROM {tables(ch).raw_series}")[0][0]) == 4
    rows = ch.execute(
        f"SELECT s.node, s.sandbox_id, s.metric, r.ts_ms, r.value FROM {tables(ch).samples} AS r "
        f"ANY INNER JOIN {tables(ch).raw_series} AS s USING series_id "
        "WHERE s.sandbox_id = 'a' AND s.metric = %(m)s ORDER BY r.ts_ms",
        {"m": n.M_CG_CPU_USAGE_US},
    )
    assert [(r[0], r[1], int(r[3]) - T0, float(r[4])) for r in rows] == [
        ("n1", "a", 1000, 100.0), ("n1", "a", DAY_MS + 1000, 100.0),
        ("n1", "a", 2 * DAY_MS + 1000, 100.0), ("n1", "a", 2 * DAY_MS + 6000, 100.0),
    ]  # fmt: skip
    import datetime as dt

    day2 = int(dt.datetime.fromtimestamp((T0 + 2 * DAY_MS) / 1000, dt.UTC).strftime("%Y%m%d"))
    assert len(shards.drop_days_before(ch, n.T_SAMPLES, day2)) == 2  # what `sandmeter retention` does
    left = ch.execute(f"SELECT min(ts_ms), count() FROM {tables(ch).samples}")[0]
    assert (int(left[0]) - T0, int(left[1])) == (2 * DAY_MS + 1000, 8)


class FailsFirstInsert:
    """A raw connection whose first insert is lost, as when the server restarts under it."""

    def __init__(self, real: Any) -> None:
        self.real, self.inserts = real, 0
        self.tables = real.tables

    def insert_dataframe(self, query: str, df: Any) -> Any:
        self.inserts += 1
        if self.inserts == 1:
            raise ConnectionError("connection reset by peer")
        return self.real.insert_dataframe(query, df)


@pytest.mark.clickhouse
def test_raw_samples_on_their_own_connection_fail_the_write_and_its_retry_writes_them(
    stack: Stack, db: tuple[str, Any]
) -> None:
    name, ch = db
    raw = FailsFirstInsert(stack.ch(name, WRITER))
    w = ClickHouseWriter(ch, keep_raw=True, raw_ch=raw)
    empty = Accounted(usage=pd_empty())
    first = w.prepare(empty, [scrape("n1", T0 + 1000)])  # the new series are named here, once
    with pytest.raises(WriteError, match="raw_series"):
        w.write(first)  # the raw thread's insert fails: the write must not pass
    w.write(first)  # the retry writes what is missing, with the names framed before
    w.write(w.prepare(empty, [scrape("n1", T0 + 6000)]))
    per_scrape = len(scrape("n1", T0))
    assert int(ch.execute(f"SELECT count() FROM {tables(ch).raw_series}")[0][0]) == per_scrape  # names not lost
    assert int(ch.execute(f"SELECT count() FROM {tables(ch).samples}")[0][0]) == 2 * per_scrape
    assert raw.inserts == 4  # names (lost, then again), samples, the second scrape's samples: all on its connection


def pd_empty() -> Any:
    import pandas as pd

    from pipeline.accounting import USAGE_COLUMNS

    return pd.DataFrame(columns=list(USAGE_COLUMNS))
