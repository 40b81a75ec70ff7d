"""Ground truth under churn, exactly once through a SIGKILL: simulator -> real collectors ->
Tansu -> `sandmeter process` child processes -> ClickHouse, compared per lifetime.

The simulator runs as its own process (`sandmeter simulate`), on tmpfs as a node's /run is.
Hundreds of sandboxes live 20-500 ms beside long-lived ones whose VMs restart mid-interval;
one node's batches are held back until after a flush and a processor takeover; old batches
are sent again; the first processor is killed -9 after flushing past its last checkpoint and
two instances take over. Runs in its own ClickHouse database and topics.
"""

from __future__ import annotations

import signal
import statistics
import time
from pathlib import Path
from typing import Any

import pytest
from processes import Processors, SimProcess, drain_and_catch_up, metric

from contracts.clickhouse import tables
from contracts.names import PROCESSOR_BATCHES as BATCHES
from contracts.names import PROCESSOR_CHECKPOINTS as CHECKPOINTS
from contracts.names import UNATTRIBUTED
from sandmeter.stack import Stack, create_topics
from sandmeter.stack.procs import free_port

pytestmark = pytest.mark.e2e

ALLOC_MAX_MS, ALLOC_P99_MS = 10, 5  # per-lifetime allocation error bounds (docs/metering.md)
# memory-used integral per sandbox, lifetimes >= 100 ms: over the stamped lifetime for each one
# (its start and stop errors are the allocation's, bounded above), and over the true one at p99
MEM_REL = 0.01
NET_BYTES_PER_MS = 1500 + 700  # the simulator's guest traffic, rx + tx
INTERVAL_S = 0.5
PER_SANDBOX = (
    "SELECT sandbox_id, arrayStringConcat(groupUniqArray(tenant), ','), sum(cpu_used_us), sum(io_read_bytes), "
    "sum(io_write_bytes), sum(net_rx_bytes), sum(net_tx_bytes), sum(vcpu_alloc_mcpu_ms), sum(mem_alloc_byte_ms), "
    "sum(mem_used_byte_ms) FROM usage_intervals FINAL GROUP BY sandbox_id"
)
STAMPS = "SELECT sandbox_id, event, min(ts_ms) FROM sandbox_lifecycle FINAL GROUP BY sandbox_id, event"
EXACT = ("cpu_used_us", "io_read_bytes", "io_write_bytes")


def resend_old_batches(bootstrap: str, topic: str, count: int) -> int:
    """Produces the first `count` messages of each partition again, as a confused producer might."""
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition

    c = KafkaConsumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    c.assign([TopicPartition(topic, p) for p in range(4)])
    old: list[Any] = []
    deadline = time.monotonic() + 20
    while len(old) < 4 * count and time.monotonic() < deadline:  # the topic never goes quiet: count, not wait
        for msgs in c.poll(timeout_ms=500).values():
            old += msgs[: count - sum(1 for o in old if o.partition == msgs[0].partition)]
    c.close()
    prod = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    for m in old:
        prod.send(topic, key=m.key, value=m.value, headers=m.headers)
    prod.flush()
    prod.close()
    return len(old)


def pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))]


def compare_lifetimes(ch: Any, truth: dict[str, Any]) -> tuple[list[str], dict[str, list[float]]]:
    """Each lifetime's billed usage against its truth: what is off, and the error distributions.

    The simulator records how long each start's and stop's clock read and file operation took
    together (normally a few µs; more when the machine preempted it in between): the truth
    itself is exact only to within that, so it widens that lifetime's bounds.
    """
    got = {r[0]: (str(r[1]).split(","), [int(x) for x in r[2:]]) for r in ch.execute(PER_SANDBOX)}
    stamped = {(str(sb), str(ev)): int(ts) for sb, ev, ts in ch.execute(STAMPS)}
    off: list[str] = []
    worst: list[tuple[float, str]] = []
    errs: dict[str, list[float]] = {"alloc_ms": [], "alloc_excess_ms": [], "mem_rel": [], "mem_integral_rel": [],
                                    "net_lost": []}  # fmt: skip
    for s in truth["sandboxes"]:
        tenants, vals = got.get(s["sandbox_id"], ([], [0] * 8))
        cpu, rd, wr, rx, tx, alloc, mem_alloc, mem_used = vals
        life = s["stop_ms"] - s["start_ms"]
        window = -(-(s["start_window_us"] + s["stop_window_us"]) // 1000)  # ms, rounded up
        what = f"sandbox {s['sandbox_id']} ({s['tenant']}, {s['node']}, {life} ms, restarts {s['restarted_at']})"
        if tenants != [s["tenant"]]:
            off.append(f"{what}: billed to {tenants}")
        for name, v in zip(EXACT, (cpu, rd, wr), strict=True):
            if v != s[name]:
                off.append(f"{what}: {name} {v - s[name]:+d}")
        alloc_ms = (alloc - s["vcpu_alloc_mcpu_ms"]) / s["vcpu_millicores"]
        mem_ms = (mem_alloc - s["mem_alloc_byte_ms"]) / s["memory_bytes"]
        errs["alloc_ms"].append(alloc_ms)
        errs["alloc_excess_ms"].append(max(0.0, abs(alloc_ms) - window))
        stamped_start = stamped.get((s["sandbox_id"], "start"), 0)
        stamped_stop = stamped.get((s["sandbox_id"], "stop"), 0)
        start_err, stop_err = stamped_start - s["start_ms"], stamped_stop - s["stop_ms"]
        worst.append((abs(alloc_ms), f"{what}: allocated {alloc_ms:+.0f} ms; start {start_err:+d}, stop {stop_err:+d}"))
        if max(abs(alloc_ms), abs(mem_ms)) > ALLOC_MAX_MS + window:
            off.append(f"{what}: allocated {alloc_ms:+.0f} ms (GiB {mem_ms:+.0f} ms), truth within {window} ms")
        if life >= 100:
            rel = (mem_used - s["mem_used_byte_ms"]) / s["mem_used_byte_ms"]
            errs["mem_rel"].append(rel)
            # the integral itself: against this sandbox's memory over the lifetime it was stamped with
            stamped_life = stamped_stop - stamped_start
            integral = (mem_used - s["mem_used_byte_ms"] * stamped_life / life) / s["mem_used_byte_ms"]
            errs["mem_integral_rel"].append(integral)
            if abs(integral) > MEM_REL:
                off.append(f"{what}: memory used {rel:+.2%}, {integral:+.2%} over its stamped lifetime")
        lost = s["net_rx_bytes"] + s["net_tx_bytes"] - rx - tx
        errs["net_lost"].append(lost)
        # the documented bound: only a final reading that CNI DEL beat loses bytes, at most
        # those since the sandbox's previous reading (one scrape interval)
        if not 0 <= lost <= NET_BYTES_PER_MS * min(life, 1000 * INTERVAL_S):
            off.append(f"{what}: network {-lost:+d} bytes")
    print("largest allocation errors:\n  " + "\n  ".join(w for _, w in sorted(worst, reverse=True)[:5]))
    return off, errs


def debug_cpu(ch: Any, truth: dict[str, Any], sandboxes: list[str]) -> None:
    """What the pipeline saw of each sandbox whose CPU is off: its rows and its raw CPU samples."""
    for sb in sandboxes[:3]:
        rows = ch.execute("SELECT batch_id, start_ms, end_ms, cpu_used_us FROM usage_intervals FINAL "
                          "WHERE sandbox_id = %(s)s ORDER BY end_ms, batch_id", {"s": sb})  # fmt: skip
        raw = ch.execute(
            f"SELECT r.ts_ms, r.value FROM {tables(ch).samples} AS r ANY INNER JOIN {tables(ch).raw_series} AS s "
            "USING series_id "
            "WHERE s.sandbox_id = %(s)s AND s.metric = 'cgroup_cpu_usage_usec' ORDER BY r.ts_ms",
            {"s": sb},
        )
        late = ch.execute(f"SELECT ts_ms, value FROM {tables(ch).late} WHERE sandbox_id = %(s)s AND "
                          "metric = 'cgroup_cpu_usage_usec' ORDER BY ts_ms", {"s": sb})  # fmt: skip
        print(f"{sb}: rows {[tuple(r) for r in rows]}\n  raw cpu {[tuple(r) for r in raw]}\n  late {late}")


def test_churn_sigkill_and_two_instances_give_ground_truth_per_lifetime(
    stack: Stack, db: tuple[str, Any], tmp_path: Path, shm_path: Path, collectors: Any
) -> None:
    name, ch = db
    topic = f"samples-{name}"
    create_topics(stack.kafka_bootstrap, 4, (topic, topic + ".dlq"))
    procs = Processors(stack, name, topic, f"group-{name}", tmp_path)
    # ~12 short-lived sandboxes a second beside 16 long-lived ones whose VMs restart; node-01 is
    # cut off from Kafka until mid-run, so its batches arrive late, after the takeover
    sim = SimProcess(
        shm_path,
        tmp_path,
        "--nodes",
        "4",
        "--sandboxes",
        "16",
        "--tenants",
        "3",
        "--seed",
        "5",
        "--churn-per-min",
        "20",
        "--short-per-min",
        "720",
        "--lifetime",
        "uniform:20:500",
        "--restart-per-min",
        "15",
    )  # fmt: skip  (on tmpfs, as a node's /run is)
    fleet = collectors(sim, stack.kafka_bootstrap, topic, tmp_path / "spool", INTERVAL_S, held=("node-01",))
    sim.start()
    try:
        port = free_port()
        first = procs.start(metrics_port=port)
        deadline = time.monotonic() + 60
        while metric(port, CHECKPOINTS) < 1:  # one checkpoint, then flushes that are not in one
            assert time.monotonic() < deadline, "no checkpoint from the first processor"
            time.sleep(0.2)
        saved, flushed = metric(port, CHECKPOINTS), metric(port, BATCHES)
        time.sleep(2.5)
        assert metric(port, CHECKPOINTS) == saved and metric(port, BATCHES) > flushed
        first.send_signal(signal.SIGKILL)  # no flush, no checkpoint, no leaving the group
        first.wait(timeout=10)
        procs.start()
        procs.start()  # two instances share the four partitions from here on
        time.sleep(6)
        resent = resend_old_batches(stack.kafka_bootstrap, topic, 20)  # duplicates, arriving late
        released = fleet.release()  # node-01's backlog, late but new
        time.sleep(6)
        drain_and_catch_up(sim, fleet, stack.kafka_bootstrap, f"group-{name}", topic)
    finally:
        fleet.stop_event.set()
        procs.stop_all()
        truth = sim.stop()

    assert first.returncode == -signal.SIGKILL
    stamps = sum((a.watcher.stamps for a in fleet.agents), start=type(fleet.agents[0].watcher.stamps)())
    short = [s for s in truth["sandboxes"] if s["short"]]
    lives = [s["stop_ms"] - s["start_ms"] for s in short]
    print(f"{len(truth['sandboxes'])} lifetimes, {len(short)} short ({min(lives)}-{max(lives)} ms); stamps {stamps}")
    assert len(short) >= 300 and min(lives) < 40 and max(lives) >= 400
    raw, final = ch.execute("SELECT count(), uniqExact(tenant, sandbox_id, end_ms, batch_id) FROM usage_intervals")[0]
    print(f"usage rows {raw}, distinct {final}: {raw - final} replayed rows not merged yet")
    late = int(ch.execute(f"SELECT count() FROM {tables(ch).late}")[0][0])
    print(
        "late and rejected samples by reason:",
        {str(r): int(c) for r, c in ch.execute(f"SELECT reason, count() FROM {tables(ch).late} GROUP BY reason")},
    )
    print(f"{resent} old batches sent again: {late} samples went to late_samples, none billed twice")
    assert resent >= 40 and late > 0
    resets = sum(s["counter_resets"] for s in truth["sandboxes"])
    print(f"{resets} VM restarts (counter resets); {released} batches of node-01 delivered late")
    assert resets >= 1 and released >= 20

    off, errs = compare_lifetimes(ch, truth)
    a, x = [abs(v) for v in errs["alloc_ms"]], errs["alloc_excess_ms"]
    m = [abs(v) for v in errs["mem_rel"]]
    mi = [abs(v) for v in errs["mem_integral_rel"]]
    windows = [s["start_window_us"] + s["stop_window_us"] for s in truth["sandboxes"]]
    print(
        f"allocation error per lifetime (ms): max {max(a):.1f}, p99 {pct(a, 0.99):.1f}, mean {statistics.mean(a):.2f} "
        f"(signed mean {statistics.mean(errs['alloc_ms']):+.2f}); beyond the truth's own window: max {max(x):.1f}, "
        f"p99 {pct(x, 0.99):.1f} (windows: median {statistics.median(windows)} us, max {max(windows)} us); "
        f"memory used, {len(m)} lifetimes >= 100 ms: max {max(m):.3%}, p99 {pct(m, 0.99):.3%} (over the stamped "
        f"lifetimes: max {max(mi):.3%}); "
        f"network bytes lost: {sum(errs['net_lost'])} in {sum(1 for v in errs['net_lost'] if v)} lifetimes"
    )
    print("\n".join(off[:40]))
    if any("cpu_used_us" in o for o in off):
        debug_cpu(ch, truth, [o.split()[1] for o in off if "cpu_used_us" in o])
    assert not off, f"{len(off)} findings over {len(truth['sandboxes'])} lifetimes"
    assert max(x) <= ALLOC_MAX_MS and pct(x, 0.99) <= ALLOC_P99_MS
    assert pct(m, 0.99) <= MEM_REL

    unattributed = ch.execute("SELECT count() FROM usage_intervals FINAL WHERE tenant = %(t)s", {"t": UNATTRIBUTED})
    assert unattributed[0][0] == 0
    life = ch.execute("SELECT sandbox_id, event, count(), arrayStringConcat(groupUniqArray(tenant), ',') "
                      "FROM sandbox_lifecycle FINAL GROUP BY sandbox_id, event")  # fmt: skip
    tenant_of = {s["sandbox_id"]: s["tenant"] for s in truth["sandboxes"]}
    wrong = [r for r in life if int(r[2]) != 1 or str(r[3]) != tenant_of.get(str(r[0]))]
    assert not wrong and len(life) == 2 * len(tenant_of), (wrong[:5], len(life), len(tenant_of))

    rows = ch.execute(
        "SELECT tenant, sum(cpu_used_us), sum(io_read_bytes), sum(io_write_bytes), sum(net_rx_bytes) + "
        "sum(net_tx_bytes), sum(vcpu_alloc_mcpu_ms), sum(mem_used_byte_ms) FROM usage_intervals FINAL GROUP BY tenant"
    )
    got = {r[0]: [int(x) for x in r[1:]] for r in rows}
    assert set(got) == set(truth["tenants"])
    for tenant, t in truth["tenants"].items():
        cpu, rd, wr, net, _, _ = got[tenant]
        assert (cpu, rd, wr) == (t["cpu_used_us"], t["io_read_bytes"], t["io_write_bytes"]), tenant  # exact
        net_truth = t["net_rx_bytes"] + t["net_tx_bytes"]
        print(f"{tenant}: network {net} of {net_truth} bytes ({(net - net_truth) / net_truth:+.4%})")
    # the minute (per sandbox and per tenant) and hour rollups hold exactly what the deduplicated intervals hold
    for table in ("usage_minute", "usage_tenant_minute", "usage_hour"):
        rolled = ch.execute(
            "SELECT tenant, sum(cpu_used_us), sum(io_read_bytes), sum(io_write_bytes), sum(net_rx_bytes) + "
            f"sum(net_tx_bytes), sum(vcpu_alloc_mcpu_ms), sum(mem_used_byte_ms) FROM {table} FINAL GROUP BY tenant"
        )
        assert {r[0]: [int(x) for x in r[1:]] for r in rolled} == got, table
