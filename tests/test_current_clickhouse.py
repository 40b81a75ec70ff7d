"""The SQL on ClickHouse 18.16 and on current ClickHouse (chdb: 26.x embedded in-process).

One scenario drives every code path that talks to ClickHouse through its real code: every
migration (single-node flavour), the processor (flushes, late samples, rollups, checkpoints,
retention), the API's routes (usage from each table, cost, invoices draft -> final -> late
usage, keys, incidents, /v1/scale, readiness), the scale publisher, and every ClickHouse panel
and variable of the generated dashboards. It runs on the session's 18.16 server and on chdb:
every statement must succeed on both, and every read must return the same rows.
"""

from __future__ import annotations

import datetime as dt
import io
import re
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from chdb_client import ChdbClient
from grafana_macros import render_sql, targets
from support import private_db

from contracts import names as n
from contracts.builder import BatchBuilder
from contracts.clickhouse import tables
from contracts.names import Tables, databases
from contracts.wire import EventKind, encode, sub_label
from sandmeter.stack import Stack

pytestmark = pytest.mark.clickhouse
T0 = 1_795_773_600_000  # 2026-11-27T10:00Z
HOUR = 3_600_000
SPAN = HOUR  # of scrapes: long enough for hour, minute and interval reads
ROOT = Path(__file__).resolve().parents[1]


class Recording:
    """A client that notes each statement (its text before substitution) and each read's rows."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.tables = inner.tables
        self.statements: list[str] = []
        self.reads: list[tuple[str, list[list[str]]]] = []

    def execute(self, query: str, params: Any = None, settings: Any = None, **kw: Any) -> Any:
        self.statements.append(query)
        rows = self.inner.execute(query, params, settings=settings, **kw)
        # key ids are random (chdb_client appends a WITH TOTALS row as the driver does: compared too)
        if query.lstrip().upper().startswith("SELECT") and n.T_API_KEYS not in query:
            self.reads.append((query, normalized(rows)))
        return rows

    def insert_dataframe(self, query: str, df: Any, settings: Any = None) -> Any:
        self.statements.append(query)
        return self.inner.insert_dataframe(query, df)


_NUMBER = re.compile(r"^-?\d+\.\d*(e[-+]?\d+)?$")


def normalized(rows: Any) -> list[list[str]]:
    """Rows as sorted text: DateTime as epoch seconds (the driver gives datetimes, Arrow
    numbers), numbers to 9 significant digits (the two render floats differently)."""
    out = []
    for r in rows or []:
        cells = []
        for v in r:
            v = v.item() if hasattr(v, "item") else v
            if isinstance(v, bytes):
                v = v.decode()
            if isinstance(v, dt.datetime):
                v = int(v.replace(tzinfo=v.tzinfo or dt.UTC).timestamp())
            if isinstance(v, str) and _NUMBER.match(v):  # a numpy row of mixed types comes as text
                v = float(v)
            if isinstance(v, float | Decimal):
                v = f"{float(v):.9g}"
            cells.append(str(v))
        out.append(cells)
    return sorted(out)


def batches() -> list[tuple[bytes, bytes]]:
    """An hour of 5 s scrapes of 3 nodes x 2 sandboxes of 2 tenants: usage, function load,
    and the raw series the dashboards chart (host pressure, disk time, QEMU threads)."""
    out = []
    for node_i in range(3):
        for seq, t in enumerate(range(T0, T0 + SPAN, 5000)):
            b = BatchBuilder(f"node-{node_i}")
            b.add(0, n.M_HOST_PRESSURE, sub_label(item="avg10", kind="some", resource="io"), t, 1.5 + node_i)
            b.add(0, n.M_HOST_DISK, sub_label(dev="vda", item="io_ms"), t, seq * 50.0)
            for s, tenant in enumerate(("acme", "globex")):
                sid = f"sb-{node_i}-{s}"
                e = b.entity(
                    sid, {"tenant": tenant, "cri_name": f"resize-7d9f8b6c5-q{node_i}z{s}x", "cri_namespace": tenant}
                )
                for metric, value in (
                    (n.M_CG_CPU_USAGE_US, seq * 2_000_000.0), (n.M_SPEC_VCPU_MILLI, 1000), (n.M_SPEC_MEM_BYTES, 2**30),
                    (n.M_CG_MEM_CURRENT, 2**29), (n.M_CG_IO_RBYTES, seq * 4096.0), (n.M_CG_IO_WBYTES, seq * 8192.0),
                    (n.M_INFLIGHT, 3),
                ):  # fmt: skip
                    b.add(e, metric, "", t, value)
                b.add(e, n.M_NET_RX_BYTES, "", t, seq * 1000.0)
                b.add(e, n.M_PROC_THREADS, sub_label(proc="qemu", state="D"), t, seq % 3)
                if seq == 0:
                    b.event(e, EventKind.START, t - 1000)
            out.append((f"node-{node_i}".encode(), encode(b.build(1, seq, t))))
    return out


class _Kafka:
    """The consumer and producer sides the processor touches, doing nothing: the test submits
    the records to the chain itself, so no timer or rebalance changes what runs when."""

    def subscribe(self, topic: str, rebalance: Any) -> None:
        pass

    def poll(self, timeout_ms: int) -> list[Any]:
        return []

    def pause(self, tps: Any) -> None:
        pass

    def resume(self, tps: Any) -> None:
        pass

    def assignment(self) -> set[Any]:
        return set()

    def seek(self, tp: Any, offset: int) -> None:
        pass

    def seek_to_beginning(self, tp: Any) -> None:
        pass

    def lag(self) -> dict[Any, int]:
        return {}

    def commit(self, offsets: Any) -> None:
        pass

    def send(self, *a: Any, **k: Any) -> Any:
        return self  # the publisher waits on what send returns

    def get(self, timeout: float) -> None:
        pass

    def flush(self, timeout: float) -> None:
        pass

    def close(self, timeout_s: float = 0) -> None:
        pass


def run_processor(ch: Recording, now: list[int]) -> Any:
    from prometheus_client import CollectorRegistry

    from pipeline.build import assemble
    from pipeline.health import HealthEvent
    from pipeline.settings import ProcessorSettings
    from pipeline.steps import MessageRejected, Record
    from pipeline.writer import ClickHouseWriter, health_frame

    writer = ClickHouseWriter(ch, keep_raw=True)  # one connection: its statements come in one order
    s = ProcessorSettings(
        checkpoint_interval_s=0, flush_max_samples=20_000, flush_interval_s=3600, raw_retention_days=1
    )
    p = assemble(s, _Kafka(), _Kafka(), writer, writer, CollectorRegistry(), clock_ms=lambda: now[0])
    now[0] = T0 + SPAN  # the processor takes no batch from the future (beyond its clock skew)
    msgs = batches()
    records = [Record(n.TOPIC_SAMPLES, off % 2, off, k, v) for off, (k, v) in enumerate(msgs)]
    # old batches again: late samples, billed once
    records += [Record(n.TOPIC_SAMPLES, 0, len(msgs) + off, k, v) for off, (k, v) in enumerate(msgs[:40])]
    for r in records:
        while True:
            try:
                p.chain.decode.submit(r)
                break
            except MessageRejected:
                p.chain.poll()
                time.sleep(0.001)
        p.chain.poll()
    assert p.drain(None, 120)
    events = [
        HealthEvent(n.QEMU_HANG, "open", "node-0", "sb-0-0", "acme", T0 + 60_000, T0 + 60_000, {"why": "x"}),
        HealthEvent(n.QEMU_HANG, "close", "node-0", "sb-0-0", "acme", T0 + 120_000, T0 + 60_000, {"why": "y"}),
        HealthEvent(n.IO_STALL, "open", "node-1", "sb-1-1", "globex", T0 + 90_000, T0 + 90_000, {}),
        HealthEvent(n.HOST_DISK_STALL, "open", "node-1", "", "", T0 + 90_000, T0 + 30_000, {}, "acme"),
    ]  # fmt: skip
    df = health_frame(events)
    ch.insert_dataframe(f"INSERT INTO {tables(ch).health} ({', '.join(df.columns)}) VALUES", df)
    p.on_assigned([(n.TOPIC_SAMPLES, 0), (n.TOPIC_SAMPLES, 1)])  # loads the checkpoints it saved
    deadline = time.monotonic() + 30
    ready: set[Any] = set()
    while len(ready) < 2 and time.monotonic() < deadline:
        ready |= p.loader.poll()
        time.sleep(0.005)
    assert len(ready) == 2, ready
    return p


def retention(ch: Recording, p: Any, now: list[int]) -> None:
    from pipeline.retention import retain

    p.close()
    now[0] = T0 + 3 * 86_400_000  # days on: retention drops the raw samples' and function load's day
    dropped = retain(ch, now[0], raw_days=1)
    assert sum(len(v) for v in dropped.values()) == 2, dropped


def late_part(ch: Recording) -> None:
    """A usage row the rollups have not seen (a part a replica got late): reconcile repairs them."""
    from pipeline import reconcile_rollups as reconcile

    assert reconcile(ch, T0, T0 + SPAN) == {}
    ch.execute(
        f"INSERT INTO {n.T_USAGE} (tenant, sandbox_id, node, start_ms, end_ms, cpu_used_us, batch_id) VALUES",
        [("acme", "sb-0-0", "node-0", T0 + 85_000, T0 + 90_000, 7, "late-part")],
        settings={"use_numpy": False},
    )
    totals = "SELECT sum(cpu_used_us) FROM {} FINAL WHERE tenant = 'acme'"
    hour = int(ch.execute(totals.format(n.T_USAGE_HOUR))[0][0])
    assert reconcile(ch, T0, T0 + SPAN) == {"acme": (T0 + 60_000, T0 + 60_000)}  # that minute (the hour follows)
    assert reconcile(ch, T0, T0 + SPAN) == {}
    for table in (n.T_USAGE, n.T_USAGE_MINUTE, n.T_USAGE_HOUR):
        assert int(ch.execute(totals.format(table))[0][0]) == hour + 7, table


def call_api(ch: Recording, now: list[int], plans: Path) -> int:
    """Every read route of the API (and key management as the CLI does it); returns the calls."""
    from fastapi.testclient import TestClient

    from billing import (
        OPERATOR,
        TENANT,
        ApiSettings,
        create_app,
        create_key,
        finalize_job,
        list_keys,
        load_book,
        revoke_key,
    )

    app = create_app(ApiSettings(key_cache_s=0), lambda: ch, book=load_book(plans), clock_ms=lambda: now[0])
    op = {"Authorization": f"Bearer {create_key(ch, OPERATOR)[1]}"}
    kid, key = create_key(ch, TENANT, "acme")
    acme = {"Authorization": f"Bearer {key}"}
    iso = lambda ms: dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")  # noqa: E731
    calls = []
    now[0] = T0 + SPAN + 5000
    lo, hi = T0, T0 + SPAN
    calls.append(("/readyz", op, {}))
    calls.append(("/v1/tenants", op, {"from": iso(lo), "to": iso(hi)}))
    for g in ("second", "minute", "hour", "day"):
        for f, t in ((lo, hi), (lo + 1234, hi - 777), (lo + 60_000, hi - 60_000)):  # hour, interval, minute tables
            for by in ({}, {"group_by": "sandbox"}):
                if g == "second" and t - f > 3600_000:
                    f, t = lo + 60_000, lo + 1_860_000
                calls.append(("/v1/tenants/acme/usage", acme, {"from": iso(f), "to": iso(t), "granularity": g, **by}))
    calls.append(("/v1/tenants/acme/cost", acme, {"from": iso(lo), "to": iso(hi)}))
    calls.append(("/v1/tenants/acme/cost", acme, {"from": iso(lo + 1234), "to": iso(hi)}))
    calls.append(("/v1/scale/acme/resize", acme, {}))
    for state in ("open", "closed", "all"):
        calls.append(("/v1/health/sandboxes", op, {"state": state}))
        calls.append(("/v1/tenants/acme/health", acme, {"state": state}))
    calls.append(("/v1/tenants/acme/invoices/2026-11", acme, {}))  # a draft
    with TestClient(app) as c:
        for path, headers, params in calls:
            r = c.get(path, headers=headers, params=params)
            assert r.status_code == 200, (path, params, r.text)
        now[0] = T0 + 40 * 86_400_000  # January: the job finalizes November (stored); December had no usage
        out = io.StringIO()
        assert finalize_job(ApiSettings(plans_dir=plans), ch, "acme", iso(now[0]), out) == 0, out.getvalue()
        assert "finalized acme 2026-11" in out.getvalue()
        for period, status in (("2026-11", 200), ("2026-11", 200), ("2026-12", 404)):
            r = c.get(f"/v1/tenants/acme/invoices/{period}", headers=acme)
            assert r.status_code == status, r.text
            assert status != 200 or r.json()["status"] == "final", r.text
    assert {k["key_id"] for k in list_keys(ch)} >= {kid} and revoke_key(ch, kid)
    return len(calls) + 3


def publish_scale(ch: Recording, now: list[int]) -> None:
    from prometheus_client import CollectorRegistry

    from scaling import KpaConfig, Publisher

    now[0] = T0 + SPAN + 2000
    pub = Publisher(ch, _Kafka(), n.TOPIC_SCALE, 60.0, lambda: now[0], KpaConfig(), CollectorRegistry())
    assert pub.tick() == 2  # one function per tenant


def query_dashboards(ch: Recording) -> int:
    from dashboards import generate as g

    variables: dict[str, list[str]] = {}
    panels = 0
    for name in g.DASHBOARDS:
        for v in g.dashboard_json(name, database=tables(ch).database).get("templating", {}).get("list", []):
            variables[v["name"]] = [str(r[0]) for r in ch.execute(v["query"])] or ["none"]
    for name in g.DASHBOARDS:
        for panel, t in targets(g.dashboard_json(name, database=tables(ch).database)):
            if panel["datasource"]["uid"] == g.CH_UID:
                rows = ch.execute(render_sql(t["rawSql"], T0 // 1000 - 60, (T0 + SPAN) // 1000 + 60, 10, variables))
                assert rows, (name, panel["title"])
                panels += 1
    return panels


def scenario(ch: Recording) -> dict[str, int]:
    """Every path, in a fixed order with fixed clocks, so both servers see the same statements."""
    from pipeline.schema import available, migrate

    now = [T0]
    migrated = migrate(ch, T0)
    assert [m.version for m in migrated] == [m.version for m in available()]
    assert migrate(ch, T0) == []
    counts = {"migration statements": sum(len(m.statements) for m in migrated)}
    processor = run_processor(ch, now)
    late_part(ch)
    counts["API calls"] = call_api(ch, now, ROOT / "plans")
    publish_scale(ch, now)
    counts["dashboard panels"] = query_dashboards(ch)
    retention(ch, processor, now)
    counts["statements"] = len(ch.statements)
    counts["distinct statements"] = len(set(ch.statements))
    return counts


@pytest.fixture(scope="module")
def current(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """chdb's embedded server: one per process, so one for the module."""
    c = ChdbClient(tmp_path_factory.mktemp("chdb"))
    yield c
    c.close()


def timed(fn: Callable[[], dict[str, int]]) -> tuple[dict[str, int], float]:
    t0 = time.perf_counter()
    return fn(), time.perf_counter() - t0


def test_every_statement_runs_on_18_16_and_current_clickhouse_with_equal_results(stack: Stack, current: Any) -> None:
    from clickhouse_driver.errors import Error

    with private_db(stack) as (name, ch18):
        # the same database names on both, so both see the very same statements
        current.execute(f"CREATE DATABASE {name}")
        current.execute(f"USE {name}")
        current.tables = Tables(name)
        new = Recording(current)
        new_counts, new_s = timed(lambda: scenario(new))
        version = current.execute("SELECT version()")[0][0]
        for each in databases(name):  # private_db migrated it: start bare
            for (table,) in ch18.execute(f"SHOW TABLES FROM {each}"):
                ch18.execute(f"DROP TABLE {each}.{table}")
        old = Recording(ch18)
        try:
            old_counts, old_s = timed(lambda: scenario(old))
        except Error as exc:  # name the statement, not only the server's trace
            pytest.fail(f"18.16 refused: {str(exc).splitlines()[0]}\n{old.statements[-1]}")
    print(f"\nClickHouse {version} (chdb): {new_counts} in {new_s:.1f} s; 18.16: {old_counts} in {old_s:.1f} s")
    assert new_counts == old_counts and new.statements == old.statements
    assert new_counts["migration statements"] >= 12 and new_counts["dashboard panels"] >= 16
    assert len(new.reads) == len(old.reads) >= 60
    differ = [
        f"{sql}\n  current: {a[:3]}\n  18.16:   {b[:3]}"
        for (sql, a), (_, b) in zip(new.reads, old.reads, strict=True)
        if a != b
    ]
    assert not differ, "\n".join(differ)
