"""Generated streams of valid batches with bad records of every kind between them, and what
the processor must make of them (shared by the chain-level and the real-broker property tests).

Valid batches: one or two nodes, one to three sandboxes each, a START in the first batch, CPU
and IO counters growing at most at the sandbox's spec (sometimes restarting from 0 in between,
as a VM restart does), the spec in every batch, sometimes a STOP in the last, sometimes odd
headers (which change nothing). Between them, records that must be dead-lettered with their
bytes (tombstones, empty, random, truncated, bit-flipped, a future version, oversized, a wrong
or missing key, year 2200, older than anything kept, too many samples) and batches whose
billed values must be rejected sample by sample (NaN, +-Inf, negative, beyond 2^53, a counter
rising faster than the spec, or falling where no reset could): they hold only rejected samples,
a spec and times inside the valid sequence, so the reference from the valid batches alone holds.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from hypothesis import strategies as st

from contracts import names as n
from contracts.builder import BatchBuilder
from contracts.wire import Encoder, EventKind, kafka_headers

DEAD = ("empty", "tombstone", "random", "truncated", "flipped", "version", "oversized", "bad_key", "no_key",
        "year_2200", "too_old", "many_samples")  # fmt: skip
BAD_VALUES = ("nan", "inf", "-inf", "negative", "huge", "jump", "drop")
REASON = {"empty": "empty", "tombstone": "empty", "random": None, "truncated": None, "flipped": "corrupt",
          "version": "unknown_version", "oversized": "too_large", "bad_key": "bad_key", "no_key": "bad_key",
          "year_2200": "bad_timestamp", "too_old": "bad_timestamp", "many_samples": "too_large"}  # fmt: skip
REJECT = {"nan": "not_finite", "inf": "not_finite", "-inf": "not_finite", "negative": "negative",
          "huge": "out_of_range", "jump": "too_fast", "drop": "counter_drop"}  # fmt: skip
MAX_MESSAGE_BYTES, MAX_BATCH_SAMPLES = 20_000, 200  # the processor settings these streams assume
SETTINGS = {"max_message_bytes": MAX_MESSAGE_BYTES, "max_batch_samples": MAX_BATCH_SAMPLES,
            "cpu_headroom_cores": 0.0, "counter_slack_ms": 0, "max_sandbox_cpus": 64.0}  # fmt: skip


@dataclass(frozen=True)
class Sandbox:
    vcpu: int  # millicores; CPU grows at `rate` us per ms <= vcpu
    rate: int
    io_rate: int  # bytes per ms
    reset_at: int | None  # the valid batch before which the VM restarted (counters from 0), if any
    stops: bool


@dataclass(frozen=True)
class Plan:
    nodes: tuple[tuple[Sandbox, ...], ...]
    gaps: tuple[int, ...]  # ms between valid scrapes (the first: since the start)
    bad: tuple[tuple[int, str], ...]  # (after which valid record, kind)


@st.composite
def plans(draw: st.DrawFn, max_bad: int = 6) -> Plan:
    sb = st.builds(
        Sandbox, vcpu=st.sampled_from([250, 500, 1000, 2000]), rate=st.just(0), io_rate=st.integers(0, 5000),
        reset_at=st.none() | st.integers(1, 5), stops=st.booleans(),
    )  # fmt: skip
    nodes = draw(st.lists(st.lists(sb, min_size=1, max_size=3).map(tuple), min_size=1, max_size=2))
    nodes = [tuple(Sandbox(s.vcpu, draw(st.integers(50, s.vcpu)), s.io_rate, s.reset_at, s.stops) for s in nd)
             for nd in nodes]  # fmt: skip
    gaps = draw(st.lists(st.integers(200, 5000), min_size=2, max_size=6))
    kinds = st.sampled_from(DEAD + BAD_VALUES)
    bad = draw(st.lists(st.tuples(st.integers(0, len(gaps) * len(nodes) - 1), kinds), max_size=max_bad))
    return Plan(tuple(nodes), tuple(gaps), tuple(sorted(bad)))


@dataclass
class Produced:
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes | None]]
    dead: str | None = None  # the dead-letter reason it must get (None: any decoding reason)
    is_dead: bool = False
    rejected: list[str] = field(default_factory=list)  # the reasons of the samples it must lose


@dataclass
class Stream:
    records: list[Produced]
    truth: dict[str, dict[str, int]]  # sandbox -> cpu_used_us, io_read_bytes, vcpu_alloc_mcpu_ms, vcpu, elapsed_ms
    tenants: set[str]


def _counters(s: Sandbox, start: int, ts: list[int]) -> tuple[list[int], list[int], int, int]:
    """CPU and IO at each valid scrape (from 0 at the start, again from 0 after a restart), and
    the totals a sampler can observe: each segment's last value."""
    cpu, io, seg_from, total_cpu, total_io = [], [], start, 0, 0
    for i, t in enumerate(ts):
        if s.reset_at == i and i > 0:
            total_cpu, total_io = total_cpu + cpu[-1], total_io + io[-1]
            # restarted between the scrapes, late enough that the counter is below its old value
            seg_from = t - min((t - ts[i - 1]) // 2, (ts[i - 1] - seg_from) // 2)
        cpu.append(s.rate * (t - seg_from))
        io.append(s.io_rate * (t - seg_from))
    return cpu, io, total_cpu + cpu[-1], total_io + io[-1]


def stream(plan: Plan, now_ms: int, uid: str, rnd: random.Random) -> Stream:
    enc = Encoder()
    start = now_ms - 60_000 - sum(plan.gaps)
    ts = [start + sum(plan.gaps[: i + 1]) for i in range(len(plan.gaps))]
    valid: list[Produced] = []
    per_node = []
    truth: dict[str, dict[str, int]] = {}
    tenants = set()
    for ni, sbs in enumerate(plan.nodes):
        node = f"n{ni}-{uid}"
        series = [_counters(s, start, ts) for s in sbs]
        for si, (s, (_, _, cpu_total, io_total)) in enumerate(zip(sbs, series, strict=True)):
            end = ts[-1]
            truth[f"{node}-s{si}"] = {"cpu_used_us": cpu_total, "io_read_bytes": io_total,
                                      "vcpu_alloc_mcpu_ms": s.vcpu * (end - start), "vcpu": s.vcpu,
                                      "elapsed_ms": end - start}  # fmt: skip
            tenants.add(f"t{si}-{uid}")
        recs = []
        for bi, t in enumerate(ts):
            b = BatchBuilder(node)
            for si, (s, (cpu, io, _, _)) in enumerate(zip(sbs, series, strict=True)):
                e = b.entity(f"{node}-s{si}", {"tenant": f"t{si}-{uid}"})
                b.add(e, n.M_CG_CPU_USAGE_US, "", t, float(cpu[bi]))
                b.add(e, n.M_CG_IO_RBYTES, "", t, float(io[bi]))
                b.add(e, n.M_SPEC_VCPU_MILLI, "", t, float(s.vcpu))
                b.add(e, n.M_SPEC_MEM_BYTES, "", t, float(1 << 30))
                if bi == 0:
                    b.event(e, EventKind.START, start)
                if bi == len(ts) - 1 and s.stops:
                    b.event(e, EventKind.STOP, t)
            batch = b.build(1, bi, t)
            headers: list[tuple[str, bytes | None]] = list(kafka_headers(batch.batch_id))
            if rnd.random() < 0.3:  # odd headers on a valid record change nothing
                headers += [("sandmeter-format", b"99"), ("x-dup", b""), ("x-dup", b"\xff")]
            recs.append(Produced(node.encode(), enc.encode(batch), headers))
        per_node.append((node, sbs, series, recs))
    # valid records in time order, nodes interleaved (a node's own order is what counts)
    order = sorted((bi, ni) for ni in range(len(plan.nodes)) for bi in range(len(ts)))
    valid = [per_node[ni][3][bi] for bi, ni in order]
    out: list[Produced] = []
    bad_at = dict.fromkeys(range(len(valid)), ())  # type: dict[int, tuple[str, ...]]
    for pos, kind in plan.bad:
        bad_at[pos] = (*bad_at[pos], kind)
    for pos, rec in enumerate(valid):
        out.append(rec)
        bi, ni = order[pos]
        for kind in bad_at[pos]:
            out.append(_bad(kind, rec, per_node[ni], bi, ts, now_ms, enc, rnd))
    return Stream(out, truth, tenants)


def _bad(kind: str, rec: Produced, node_part: tuple, bi: int, ts: list[int], now_ms: int, enc: Encoder,
         rnd: random.Random) -> Produced:  # fmt: skip
    node, sbs, series, _ = node_part
    raw = rec.value or b""
    if kind in REJECT:
        return _bad_values(kind, node, sbs, series, bi, ts, enc)
    value: bytes | None
    key = rec.key
    if kind == "empty":
        value = b""
    elif kind == "tombstone":
        value = None
    elif kind == "random":
        value = rnd.randbytes(rnd.randint(1, 300))
    elif kind == "truncated":
        value = raw[: rnd.randint(1, len(raw) - 1)]
    elif kind == "flipped":  # 1-3 bits inside what the checksum covers: CRC-32 catches every one
        buf = bytearray(raw)
        for i in rnd.sample(range(8 * 8, 8 * len(buf)), rnd.randint(1, 3)):
            buf[i // 8] ^= 1 << (i % 8)
        value = bytes(buf)
    elif kind == "version":
        value = raw[:3] + bytes([rnd.randint(2, 255)]) + raw[4:]
    elif kind == "oversized":
        value = rnd.randbytes(MAX_MESSAGE_BYTES + rnd.randint(1, 100))
    elif kind in ("bad_key", "no_key"):
        value, key = raw, (b"someone-else" if kind == "bad_key" else None)
    else:
        b = BatchBuilder(node)
        e = b.entity(f"{node}-s0", {"tenant": "x"})
        t = {"year_2200": 7_258_118_400_000, "too_old": now_ms - 40 * 86_400_000}.get(kind, ts[bi])
        samples = MAX_BATCH_SAMPLES + 1 if kind == "many_samples" else 1
        b.add_many(e, "kata_guest_load", [f'i="{i}"' for i in range(samples)], t, [1.0] * samples)
        value = enc.encode(b.build(2, bi, t))
    reason = REASON[kind]
    return Produced(key, value, list(rec.headers), dead=reason, is_dead=True)


def _bad_values(kind: str, node: str, sbs: tuple[Sandbox, ...], series: list, bi: int, ts: list[int],
                enc: Encoder) -> Produced:  # fmt: skip
    """A batch 1 ms after valid batch `bi` of `node` whose every CPU sample is bad (and valid
    spec samples); placed before the node's last batch, so the sequence's end does not move."""
    t = ts[bi] + 1
    b = BatchBuilder(node)
    rejected = []
    for si, (s, (cpu, _, _, _)) in enumerate(zip(sbs, series, strict=True)):
        e = b.entity(f"{node}-s{si}", {"tenant": "ignored"})
        prev = cpu[bi]
        k = kind
        if k == "drop" and not prev // 2 > s.vcpu:  # a reset could explain it: make it a NaN instead
            k = "nan"
        v = {"nan": float("nan"), "inf": float("inf"), "-inf": float("-inf"), "negative": -1.0 - prev,
             "huge": 2.0**60, "jump": prev + s.vcpu * 1000.0 + 1e9, "drop": float(prev // 2)}[k]  # fmt: skip
        b.add(e, n.M_CG_CPU_USAGE_US, "", t, v)
        b.add(e, n.M_SPEC_VCPU_MILLI, "", t, float(s.vcpu))
        b.add(e, n.M_SPEC_MEM_BYTES, "", t, float(1 << 30))
        rejected.append(REJECT[k])
    value = enc.encode(b.build(1, 1000 + bi, t))
    return Produced(node.encode(), value, [], rejected=rejected)


def usable(plan: Plan) -> bool:
    """Bad records go between valid ones; a value batch needs a later valid batch of its node."""
    count = len(plan.gaps) * len(plan.nodes)
    return all(pos < count - len(plan.nodes) or kind not in REJECT for pos, kind in plan.bad)
